"""The evaluation protocol: generate samples from a bundle, compare them with a reference split, record how.

FID-style numbers are only comparable within one protocol (extractor, sample count, reference split), so
every result carries the protocol it was measured under. Reference FID statistics are cached as `.npz`
under `DATA_DIR/fid-stats/`, keyed by dataset, size, split, extractor (and the classifier's SHA-256 for
domain features) and image count; `metrics.cached_statistics` recomputes them when any of those differ.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffkit.bundle import Bundle, Settings
from diffkit.config import DataConfig
from diffkit.data.dataset import ImageDataset
from diffkit.errors import DiffkitError
from diffkit.evaluate import classifier as domain
from diffkit.evaluate import metrics
from diffkit.files import file_digest
from diffkit.grids import FITTED
from diffkit.images import to_model_range, to_uint8
from diffkit.progress import progress
from diffkit.sampling import get_sampler
from diffkit.seeds import derive_seed, subset_indices

METRICS = ("fid", "kid", "pr", "accuracy", "nll", "memorisation")
IMAGE_SET_METRICS = ("fid", "kid", "pr")  # what two sets of images alone can give
EXTRACTORS = ("inception", "domain")
STATISTICS_FOLDER = "fid-stats"
# How a reference subset is chosen (seeds.subset_indices, seed 0), stored with cached statistics: caches of a split's
# first N images (the rule before 2026-12-04) no longer match and are recomputed.
REFERENCE_SUBSET = "seeded-0"


def parse_metrics(text: str, allowed: tuple[str, ...] = METRICS) -> tuple[str, ...]:
    """Comma-separated metric names -> a tuple in the given order, refusing unknown names."""
    names = tuple(dict.fromkeys(name.strip().lower() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise DiffkitError(f"Unknown metric {', '.join(map(repr, unknown)) or '(none given)'}; "
                           f"choose from: {', '.join(allowed)}.")
    return names


@dataclass(frozen=True)
class Extractor:
    """A feature extractor: name, identity (for caches) and features(images (N, C, H, W) uint8 or [-1, 1])."""

    name: str
    identity: str  # "inception" or "domain-<sha256 prefix>": two caches never mix features
    features: Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class DomainModel:
    """A loaded domain classifier and where it came from."""

    model: domain.DomainClassifier
    path: str
    sha256: str


def load_domain_model(directory: str | Path) -> DomainModel:
    """Load a saved domain classifier (checksum checked) with its path and weights' SHA-256."""
    model = domain.load_classifier(directory)
    return DomainModel(model, str(directory), file_digest(Path(directory) / domain.WEIGHTS_NAME))


def as_float_images(images: Tensor) -> Tensor:
    """uint8 images -> float32 in [-1, 1]; float images pass through."""
    return to_model_range(images) if images.dtype == torch.uint8 else images.float()


def make_extractor(name: str, classifier: DomainModel | None = None, batch_size: int = 64,
                   device: str = "cpu") -> Extractor:
    """The `inception` (FID Inception pool3) or `domain` (classifier penultimate layer) extractor."""
    if name not in EXTRACTORS:
        raise DiffkitError(f"Unknown feature extractor {name!r}; choose one of: {', '.join(EXTRACTORS)}.")
    if name == "domain":
        if classifier is None:
            raise DiffkitError("The domain extractor needs a classifier; pass --classifier DIR "
                               "(train one with `diffkit eval train-classifier`).")
        model = classifier.model
        return Extractor("domain", f"domain-{classifier.sha256[:12]}",
                         lambda images: domain.features(model, images, batch_size=max(batch_size, 256)))
    from diffkit.evaluate.inception import InceptionFeatures

    inception = InceptionFeatures(batch_size=batch_size, device=device)
    return Extractor("inception", "inception", lambda images: inception(as_float_images(images)))


def lazy(function: Callable[[], Tensor]) -> Callable[[], Tensor]:
    """A zero-argument function computed once on first call, then remembered."""
    memory: list[Tensor] = []

    def value() -> Tensor:
        if not memory:
            memory.append(function())
        return memory[0]

    return value


def statistics_path(directory: Path, dataset: str, size: int, split: str, extractor: Extractor, count: int) -> Path:
    """Where the reference statistics of one (dataset, size, split, extractor, count) are cached."""
    return directory / STATISTICS_FOLDER / f"{dataset}-{size}-{split}-{extractor.identity}-{count}.npz"


def reference_subset(images: Tensor, count: int | None) -> Tensor:
    """All images, or a seeded random `count` of them (`seeds.subset_indices`; a sorted split's first are biased)."""
    return images if count is None else images[subset_indices(len(images), count)]


def compare_features(names: tuple[str, ...], fake: Tensor, real: Callable[[], Tensor], *,
                     reference_statistics: Callable[[], tuple] | None = None, seed: int = 0,
                     kid_subset_size: int | None = None) -> dict[str, float]:
    """FID / KID / precision-recall-density-coverage of fake features against (lazily computed) real ones."""
    results: dict[str, float] = {}
    if "fid" in names:
        mu, sigma = reference_statistics() if reference_statistics else metrics.feature_statistics(real())
        results["fid"] = metrics.frechet_distance(*metrics.feature_statistics(fake), mu, sigma)
    if "kid" in names:
        generator = torch.Generator().manual_seed(seed)
        real_features = real()
        size = kid_subset_size or metrics.kid_subset_size(fake.shape[0], real_features.shape[0])
        results["kid"], results["kid_std"] = metrics.kid(fake, real_features, generator=generator, subset_size=size)
    if "pr" in names:
        results["precision"], results["recall"] = metrics.precision_recall(real(), fake)
        results["density"], results["coverage"] = metrics.density_coverage(real(), fake)
    return results


def check_comparable(real: Tensor, fake: Tensor) -> None:
    """Refuse two image sets (N, C, H, W) of different channel counts or sizes: their numbers would mean nothing."""
    if real.shape[1] != fake.shape[1]:
        raise DiffkitError(f"The real images have {real.shape[1]} channels and the fake ones {fake.shape[1]}; "
                           "compare images with the same channel count.")
    if real.shape[-2:] != fake.shape[-2:]:  # both would be resized to 299 px and compared without a word
        raise DiffkitError(f"The real images are {real.shape[-1]}x{real.shape[-2]} pixels and the fake ones "
                           f"{fake.shape[-1]}x{fake.shape[-2]}; compare images of one size.")


def compare_image_sets(real: Tensor, fake: Tensor, names: tuple[str, ...], extractor: Extractor,
                       seed: int = 0) -> dict[str, float]:
    """Metrics of two image sets (N, C, H, W), uint8 or [-1, 1], through one extractor."""
    check_comparable(real, fake)
    real_features = lazy(lambda: extractor.features(real))
    return compare_features(names, extractor.features(fake), real_features, seed=seed)


# ---------------------------------------------------------------- evaluating a trained bundle


@dataclass(frozen=True)
class Protocol:
    """How samples are drawn and what they are compared with; recorded in eval.json beside the numbers."""

    metrics: tuple[str, ...] = ("fid",)
    n: int = 5000
    sampler: str = "dpmpp_2m"
    steps: int = 20
    spacing: str | None = None  # None: the bundle's sample.spacing
    guidance: float = 1.0
    extractor: str = "inception"
    split: str = "test"  # the reference split of the run's dataset
    reference_n: int | None = None  # reference images (None: the whole split)
    seed: int = 0
    batch_size: int = 250
    nll_steps: int = 100  # the NLL bound is taken on this many uniformly respaced steps
    nll_n: int = 256  # reference images the NLL is averaged over
    grid_rows: int = 16  # memorisation grid: the samples with the lowest 1st/2nd distance ratio


@dataclass
class Evaluation:
    """The record written to eval.json, the samples, and the memorisation grid (or None)."""

    record: dict
    samples: Tensor  # (n, C, H, W) uint8
    labels: Tensor | None  # (n,) the classes the samples were drawn for
    neighbour_grid: Tensor | None  # (rows * 3, C, H, W) in [-1, 1]: sample, 1st, 2nd nearest training image


def check_protocol(protocol: Protocol, num_classes: int, classifier: DomainModel | None) -> None:
    """Refuse protocols that cannot run, each with one sentence."""
    parse_metrics(",".join(protocol.metrics))
    if protocol.extractor not in EXTRACTORS:
        raise DiffkitError(f"Unknown feature extractor {protocol.extractor!r}; choose one of: {', '.join(EXTRACTORS)}.")
    if "accuracy" in protocol.metrics and num_classes == 0:
        raise DiffkitError("Conditional accuracy needs a class-conditional model, and this one is unconditional; "
                           "drop 'accuracy' from --metrics.")
    if "accuracy" in protocol.metrics and classifier is None:
        raise DiffkitError("Conditional accuracy needs a domain classifier; pass --classifier DIR "
                           "(train one with `diffkit eval train-classifier`).")
    for name, value in (("n", protocol.n), ("steps", protocol.steps), ("batch_size", protocol.batch_size),
                        ("nll_steps", protocol.nll_steps), ("nll_n", protocol.nll_n)):
        if value < 1:
            raise DiffkitError(f"{name} must be at least 1, got {value}.")
    if protocol.n < 2 and {"fid", "kid", "pr"} & set(protocol.metrics):
        raise DiffkitError(f"FID, KID and precision/recall need at least 2 samples, got n={protocol.n}.")


def load_split(data: DataConfig, split: str) -> ImageDataset:
    """The images (uint8) and labels of one split of the dataset a run's DataConfig names."""
    from diffkit.data.synthetic import synthetic_images

    if data.dataset == "synthetic":
        options = dict(data.options)
        if split != "train":  # the built-in synthetic set has no files: its other split is a fresh draw
            options["seed"] = int(options.get("seed", 0)) + 1
        return synthetic_images(size=data.size or 8, **options)
    from diffkit.data import load_dataset

    return load_dataset(data.dataset, size=data.size, split=split, data_dir=data.data_dir, **data.options)


def generate_samples(bundle: Bundle, n: int, *, sampler: str, steps: int, spacing: str | None = None,
                     guidance: float = 1.0, seed: int = 0, batch_size: int = 250) -> tuple[Tensor, Tensor | None]:
    """n samples as uint8 (n, C, H, W), in batches, with labels 0, 1, ... cycling over all n (conditional models)."""
    labels = bundle.labels_for(n)  # (n,) cycling over the classes (Bundle's rule), or None
    labels = None if labels is None else labels.cpu()
    chunks = []
    starts = range(0, n, batch_size)
    for batch, start in progress(enumerate(starts), total=len(starts), description="sampling", unit="batch"):
        count = min(batch_size, n - start)
        batch_labels = labels[start : start + count] if labels is not None else None
        images = bundle.sample(count, sampler=sampler, steps=steps, spacing=spacing, guidance=guidance,
                               seed=derive_seed(seed, batch), labels=batch_labels)
        chunks.append(to_uint8(images))  # quantised as a saved sample would be
    return torch.cat(chunks), labels


def nll_bits(bundle: Bundle, images: Tensor, labels: Tensor | None, *, steps: int, seed: int,
             batch_size: int) -> tuple[float, float]:
    """Mean and standard error of the NLL bound (bits/dim) of uint8 images on a `steps`-step respaced chain."""
    from diffkit.process import nll_bits_per_dim
    from diffkit.schedule import respace, spaced_timesteps

    # Uniform spacing keeps step 0 (the discretised decoder L_0) and T-1 (the prior term) in the chain.
    schedule = respace(bundle.schedule, spaced_timesteps(bundle.schedule.T, min(steps, bundle.schedule.T), "uniform"))
    device = bundle.device
    schedule = schedule.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    values = []
    with torch.inference_mode():
        for start in progress(range(0, images.shape[0], batch_size), description="NLL bound", unit="batch"):
            x0 = as_float_images(images[start : start + batch_size]).to(device)  # (B, C, H, W)
            y = labels[start : start + batch_size].to(device) if labels is not None else None
            values.append(nll_bits_per_dim(bundle.denoiser, schedule, x0, y, generator=generator).cpu())
    bits = torch.cat(values).double()
    error = bits.std().item() / bits.numel() ** 0.5 if bits.numel() > 1 else float("nan")
    return bits.mean().item(), error


def feature_metrics(bundle: Bundle, protocol: Protocol, samples: Tensor, reference: ImageDataset, classifier: DomainModel | None,
                    device: str = "cpu") -> tuple[dict[str, float], dict]:
    """FID / KID / PR of the samples against the reference split, and a record of the reference used."""
    from diffkit.data.dataset import resolve_data_dir

    data = bundle.config.data
    extractor = make_extractor(protocol.extractor, classifier, device=device)
    count = len(reference.images) if protocol.reference_n is None else min(protocol.reference_n, len(reference.images))
    real_images = reference_subset(reference.images, count)
    real = lazy(lambda: extractor.features(real_images))
    path = statistics_path(resolve_data_dir(data.data_dir), data.dataset, bundle.image_shape[-1], protocol.split,
                           extractor, count)

    def statistics() -> tuple:  # read from the cache, or computed, only if FID is asked for
        return metrics.cached_statistics(path, real, dataset=data.dataset, size=bundle.image_shape[-1],
                                         split=protocol.split, extractor=extractor.identity, count=count,
                                         subset=REFERENCE_SUBSET)

    results = compare_features(protocol.metrics, extractor.features(samples), real, reference_statistics=statistics,
                               seed=protocol.seed)
    return results, {"reference_count": count, "reference_subset": REFERENCE_SUBSET,
                     "reference_statistics": str(path) if "fid" in protocol.metrics else None}


def memorisation_metrics(samples: Tensor, training: Tensor, rows: int) -> tuple[dict[str, float], Tensor]:
    """Share of samples flagged as memorised, the ratio's median, and a grid of the most suspicious samples."""
    from diffkit.evaluate.memorisation import Neighbours, memorisation, memorised_fraction, neighbour_grid

    neighbours = memorisation(samples, training)
    results = {"memorised_fraction": memorised_fraction(neighbours),
               "nearest_ratio_median": neighbours.ratio.median().item(),
               "nearest_distance_median": neighbours.distances[:, 0].median().item()}
    # The rows with the lowest 1st/2nd nearest ratio are the likeliest copies: show those.
    order = neighbours.ratio.argsort()[:rows]
    subset = Neighbours(neighbours.indices[order], neighbours.distances[order], neighbours.ratio[order],
                        neighbours.flagged[order])
    return results, neighbour_grid(samples[order], training, subset)


@contextmanager
def timed(timings: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall-clock seconds of the `with` block as timings[name]."""
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def evaluate_bundle(bundle: Bundle, protocol: Protocol, classifier: DomainModel | None = None, *,
                    device: str = "cpu", log: Callable[[str], None] = lambda message: None) -> Evaluation:
    """Draw `protocol.n` samples from a bundle and measure the protocol's metrics."""
    config = bundle.config
    check_protocol(protocol, config.model.num_classes, classifier)
    if "nll" in protocol.metrics and bundle.encoder is not None:
        raise DiffkitError("The NLL bound of a latent model would be a bound on its latents, not on pixels; drop "
                           "'nll' from --metrics.")
    settings = bundle.settings(protocol.sampler, protocol.steps, protocol.spacing)  # Bundle's default rule
    timings: dict[str, float] = {}
    results: dict[str, float] = {}
    reference_record: dict = {}
    grid = None
    with timed(timings, "sampling"):
        needs_reference = {"fid", "kid", "pr", "nll"} & set(protocol.metrics)
        reference = load_split(config.data, protocol.split) if needs_reference else None  # fail before sampling
        log(f"sampling {protocol.n} images with {protocol.sampler}, {protocol.steps} steps")
        samples, labels = generate_samples(bundle, protocol.n, sampler=protocol.sampler, steps=protocol.steps,
                                           spacing=protocol.spacing, guidance=protocol.guidance, seed=protocol.seed,
                                           batch_size=protocol.batch_size)
    if {"fid", "kid", "pr"} & set(protocol.metrics):
        with timed(timings, "features"):
            log(f"{protocol.extractor} features of the samples and the {protocol.split} split")
            found, reference_record = feature_metrics(bundle, protocol, samples, reference, classifier, device)
            results.update(found)
    if "accuracy" in protocol.metrics:
        results["accuracy"] = metrics.conditional_accuracy(domain.predict(classifier.model, samples), labels)
    if "nll" in protocol.metrics:
        with timed(timings, "nll"):
            count = min(protocol.nll_n, len(reference.images))
            log(f"NLL bound on {count} {protocol.split} images, {protocol.nll_steps} steps")
            chosen = subset_indices(len(reference.images), count)
            labels_used = reference.labels[chosen] if config.model.num_classes else None
            results["nll_bits_per_dim"], results["nll_stderr"] = nll_bits(
                bundle, reference.images[chosen], labels_used, steps=protocol.nll_steps, seed=protocol.seed,
                batch_size=protocol.batch_size)
    if "memorisation" in protocol.metrics:
        with timed(timings, "memorisation"):
            log("nearest training images of every sample")
            found, grid = memorisation_metrics(samples, load_split(config.data, "train").images, protocol.grid_rows)
            results.update(found)
    record = protocol_record(bundle, protocol, settings, classifier)
    record.update(reference_record, results=results, seconds={key: round(value, 2) for key, value in timings.items()})
    return Evaluation(record, samples, labels, grid)


def protocol_record(bundle: Bundle, protocol: Protocol, settings: Settings, classifier: DomainModel | None) -> dict:
    """The protocol as eval.json records it: enough to tell whether two results are comparable."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metrics": list(protocol.metrics), "samples": protocol.n, "sampler": protocol.sampler,
        "steps": protocol.steps, "spacing": settings.spacing if settings.timesteps is None else FITTED,
        "timesteps": settings.timesteps,
        "network_evaluations": get_sampler(protocol.sampler).evaluations(protocol.steps),
        "guidance": protocol.guidance, "seed": protocol.seed, "dataset": bundle.config.data.dataset,
        "image_size": bundle.image_shape[-1], "reference_split": protocol.split, "extractor": protocol.extractor,
        "classifier": None if classifier is None else {"path": classifier.path, "sha256": classifier.sha256},
        "nll_steps": protocol.nll_steps if "nll" in protocol.metrics else None,
        "nll_images": protocol.nll_n if "nll" in protocol.metrics else None,
    }


def train_dataset_classifier(data: DataConfig, *, steps: int, seed: int = 0, width: int = 24, batch_size: int = 128,
                             flip: bool = False) -> tuple[domain.DomainClassifier, dict]:
    """Train the domain classifier on a dataset's training split; report its test-split accuracy when present."""
    training = load_split(data, "train")
    if int(training.labels.min()) < 0:
        raise DiffkitError(f"The dataset {data.dataset} is unlabelled; a domain classifier needs class labels.")
    model = domain.train_classifier(training.images, training.labels, steps=steps, batch_size=batch_size,
                                    width=width, flip=flip, generator=torch.Generator().manual_seed(seed),
                                    num_classes=training.num_classes)
    record = {"dataset": data.dataset, "size": int(training.images.shape[-1]), "steps": steps, "width": width,
              "seed": seed, "train_images": int(training.images.shape[0])}
    try:
        test = load_split(data, "test")
    except DiffkitError:
        return model, record  # a dataset without a test split (a folder) has no held-out accuracy
    record["test_accuracy"] = domain.accuracy(model, test.images, test.labels)
    return model, record
