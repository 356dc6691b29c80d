"""Benchmark: sample quality of the class-conditional fashion28 preset after a fixed CPU training budget.

Trains the `fashion28` preset for `--minutes` (default 45), then reports against the Fashion-MNIST test
split: Inception-FID (5,000 samples, DPM-Solver++(2M), 20 steps), domain FID and KID, conditional accuracy at
guidance scales 1 / 2 / 4, and domain FID against the number of network evaluations for DDIM, DPM-Solver++,
Heun and DDPM. Every FID is printed beside its real-vs-real floor: the FID of as many *training* images
against the same test reference, the best a model of that sample count can score. Trains the domain
classifier first unless `--classifier DIR` is given. Writes JSON and a markdown table to benchmarks/results/.

    python benchmarks/quality.py            # the full run (about an hour and a half of CPU)
    python benchmarks/quality.py --quick    # a ~2-minute smoke run with tiny counts (numbers meaningless)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from diffkit.bundle import load
from diffkit.config import DataConfig, load_config
from diffkit.evaluate import metrics
from diffkit.evaluate.classifier import CONFIG_NAME, save_classifier
from diffkit.evaluate.protocol import (
    DomainModel,
    compare_features,
    generate_samples,
    load_domain_model,
    load_split,
    make_extractor,
    reference_subset,
    train_dataset_classifier,
)
from diffkit.precision import CPUINFO, cpu_bf16_flags
from diffkit.sampling import SAMPLERS

ROOT = Path(__file__).resolve().parents[1]
# Sampler name -> (label, spacing): each on its recommended grid (DESIGN.md, "The samplers").
SWEEP = {"ddim": ("DDIM", "trailing"), "dpmpp_2m": ("DPM-Solver++(2M)", "trailing"),
         "heun": ("Heun", "karras"), "ddpm": ("DDPM", "trailing")}
# Sized for the shared 2-core CPU: about 45 min of training and 1 h of measuring (docs/evaluation.md).
FULL = {"minutes": 45.0, "n": 5000, "steps": 20, "reference_n": None, "guidance_n": 1000, "nfe_n": 500,
        "nfes": "10,20,50", "classifier_steps": 2000}
QUICK = {"minutes": 0.25, "n": 40, "steps": 5, "reference_n": 60, "guidance_n": 20, "nfe_n": 20,
         "nfes": "4", "classifier_steps": 30}
CLASSIFIER_WIDTH = 24  # the domain classifier's first-stage channels, as benchmarks/domain_classifier.py defaults


def steps_for(sampler: str, evaluations: int) -> int:
    """Sampling steps that spend about `evaluations` network evaluations (Heun: 2 per step but the last)."""
    per_step = SAMPLERS[sampler].evaluations_per_step
    return max(1, (evaluations + per_step - 1) // per_step)


def evaluations_of(sampler: str, steps: int) -> int:
    """Network evaluations per sample of `steps` steps (Heun's last step is a single Euler evaluation)."""
    return SAMPLERS[sampler].evaluations(steps)


def train_model(minutes: float, run_name: str, quick: bool) -> Path:
    """Train fashion28 for `minutes` of wall clock into a fresh run directory; returns the directory."""
    from diffkit.train import train  # imported here (as checkpoint below): benchmarks/nfe.py needs no Lightning

    overrides = [f"train.max_minutes={minutes}", "train.max_steps=none"]
    if quick:
        overrides += ["train.checkpoint_every=1000000", "train.sample_every=0"]
    config = load_config("fashion28", overrides)
    result = train(config, None, name=run_name)
    print(f"trained {result.step} steps in {minutes} min ({result.stopped_by}) -> {result.run_dir}")
    return result.run_dir


def trained_so_far(directory: Path) -> tuple[int, float]:
    """(steps, minutes spent in training steps) of a run (its state.ckpt, also for a --run trained elsewhere) or of
    an export (its training.json)."""
    from diffkit.checkpoint import training_record

    record = training_record(directory)
    if record is None:
        raise SystemExit(f"{directory} records no training (no state.ckpt or training.json): its budget is unknown.")
    return int(record["trained_steps"]), float(record["training_minutes"])


def saved_classifier_record(directory: Path, data: DataConfig, steps: int) -> dict | None:
    """The metadata of a classifier saved in `directory` for this data and step count, else None."""
    try:
        record = json.loads((directory / CONFIG_NAME).read_text())["metadata"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None
    data_record = json.loads(json.dumps(asdict(data)))  # as it reads back from JSON (tuples become lists)
    wanted = {"data": data_record, "steps": steps, "width": CLASSIFIER_WIDTH, "seed": 0}
    return record if all(record.get(key) == value for key, value in wanted.items()) else None


def get_classifier(args: argparse.Namespace, data: DataConfig, run_dir: Path) -> tuple[DomainModel, dict]:
    """The domain classifier given by --classifier, the run directory's own, or one trained now and saved there."""
    if args.classifier:
        model = load_domain_model(args.classifier)
        return model, {"path": args.classifier, "sha256": model.sha256}
    directory = run_dir / "domain-classifier"
    saved = saved_classifier_record(directory, data, args.classifier_steps)
    if saved is not None:  # training is seeded, so the saved weights are the ones training would give again
        print(f"domain classifier: reusing {directory} ({args.classifier_steps} steps, same data)")
        model = load_domain_model(directory)
        return model, {"path": str(directory), **saved, "sha256": model.sha256}
    started = time.perf_counter()
    model, record = train_dataset_classifier(data, steps=args.classifier_steps, width=CLASSIFIER_WIDTH, seed=0)
    record["data"] = asdict(data)
    directory = save_classifier(model, directory, **record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    print(f"domain classifier: {record.get('test_accuracy', float('nan')):.4f} test accuracy "
          f"after {args.classifier_steps} steps")
    model = load_domain_model(directory)
    return model, dict(record, sha256=model.sha256)


class Reference:
    """Test-split features (the reference) and train-split features (the floor) for one extractor."""

    def __init__(self, extractor, test_images: torch.Tensor, train_images: torch.Tensor) -> None:
        self.extractor = extractor
        self.test = extractor.features(test_images)  # (N_test, D)
        self.statistics = metrics.feature_statistics(self.test)
        self.train_images = train_images
        self.floors: dict[int, float] = {}

    def fid(self, features: torch.Tensor) -> float:
        """FID of features against the test reference."""
        return metrics.frechet_distance(*metrics.feature_statistics(features), *self.statistics)

    def floor_images(self, count: int) -> torch.Tensor:
        """A seeded random choice of `count` training images: the floor's real sample (never the first `count`)."""
        return reference_subset(self.train_images, count)

    def floor(self, count: int) -> float:
        """FID of `count` training images against the test reference (computed once per count)."""
        if count not in self.floors:
            self.floors[count] = self.fid(self.extractor.features(self.floor_images(count)))
        return self.floors[count]


def main_sample_metrics(bundle, args, inception: Reference, domain: Reference) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Inception FID, domain FID and KID of `n` samples (DPM-Solver++(2M), 20 steps, guidance 1)."""
    started = time.perf_counter()
    samples, labels = generate_samples(bundle, args.n, sampler="dpmpp_2m", steps=args.steps, seed=0,
                                       batch_size=args.batch_size)
    sampling_seconds = time.perf_counter() - started
    domain_features = domain.extractor.features(samples)
    kid = compare_features(("kid",), domain_features, lambda: domain.test, seed=0,
                           kid_subset_size=min(1000, args.n))
    floor_kid = compare_features(("kid",), domain.extractor.features(domain.floor_images(args.n)),
                                 lambda: domain.test, seed=0, kid_subset_size=min(1000, args.n))
    return {
        "samples": args.n, "sampler": "dpmpp_2m", "steps": args.steps, "guidance": 1.0,
        "sampling_seconds": round(sampling_seconds, 1),
        "inception_fid": inception.fid(inception.extractor.features(samples)),
        "inception_fid_floor": inception.floor(args.n),
        "domain_fid": domain.fid(domain_features), "domain_fid_floor": domain.floor(args.n),
        "domain_kid": kid["kid"], "domain_kid_std": kid["kid_std"],
        "domain_kid_floor": floor_kid["kid"], "domain_kid_floor_std": floor_kid["kid_std"],
    }, samples, labels


def guidance_metrics(bundle, args, domain: Reference, classifier: DomainModel) -> list[dict]:
    """Conditional accuracy and domain FID at guidance scales 1, 2 and 4."""
    from diffkit.evaluate.classifier import predict

    rows = []
    for scale in (1.0, 2.0, 4.0):
        started = time.perf_counter()
        samples, labels = generate_samples(bundle, args.guidance_n, sampler="dpmpp_2m", steps=args.steps,
                                           guidance=scale, seed=1, batch_size=args.batch_size)
        rows.append({"guidance": scale, "samples": args.guidance_n, "steps": args.steps,
                     "seconds": round(time.perf_counter() - started, 1),
                     "accuracy": metrics.conditional_accuracy(predict(classifier.model, samples), labels),
                     "domain_fid": domain.fid(domain.extractor.features(samples)),
                     "domain_fid_floor": domain.floor(args.guidance_n)})
        print(f"guidance {scale}: accuracy {rows[-1]['accuracy']:.4f}, domain FID {rows[-1]['domain_fid']:.3f}")
    return rows


def sampler_sweep(bundle, args, domain: Reference) -> list[dict]:
    """Domain FID against network evaluations for DDIM, DPM-Solver++(2M), Heun and DDPM."""
    rows = []
    for sampler, (label, spacing) in SWEEP.items():
        for budget in (int(value) for value in args.nfes.split(",")):
            steps = steps_for(sampler, budget)
            started = time.perf_counter()
            samples, _ = generate_samples(bundle, args.nfe_n, sampler=sampler, steps=steps, spacing=spacing,
                                          seed=2, batch_size=args.batch_size)
            rows.append({"sampler": label, "steps": steps, "spacing": spacing,
                         "evaluations": evaluations_of(sampler, steps), "samples": args.nfe_n,
                         "domain_fid": domain.fid(domain.extractor.features(samples)),
                         "domain_fid_floor": domain.floor(args.nfe_n),
                         "seconds": round(time.perf_counter() - started, 1)})
            print(f"{label:>17} {rows[-1]['evaluations']:>4} NFE: domain FID {rows[-1]['domain_fid']:.3f}")
    return rows


def markdown(report: dict) -> str:
    """The report as markdown tables."""
    main = report["main"]
    lines = [f"Fashion-MNIST fashion28, {report['training']['minutes']} min CPU training "
             f"({report['training']['steps']} steps), {report['date']}, {report['machine']}; "
             f"DPM-Solver++(2M) {main['steps']} steps; reference: {report['reference']['count']} test images.", "",
             "| metric | model | real-vs-real floor |", "| --- | --- | --- |",
             f"| Inception FID ({main['samples']} samples, test split) | {main['inception_fid']:.2f} | "
             f"{main['inception_fid_floor']:.2f} |",
             f"| domain FID | {main['domain_fid']:.3f} | {main['domain_fid_floor']:.3f} |",
             f"| domain KID | {main['domain_kid']:.4f} ± {main['domain_kid_std']:.4f} | "
             f"{main['domain_kid_floor']:.4f} ± {main['domain_kid_floor_std']:.4f} |", "",
             "| guidance | conditional accuracy | domain FID | floor |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['guidance']:g} | {row['accuracy']:.4f} | {row['domain_fid']:.3f} | {row['domain_fid_floor']:.3f} |"
              for row in report["guidance"]]
    lines += ["", "| sampler | NFE | steps | domain FID | floor |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {row['sampler']} | {row['evaluations']} | {row['steps']} ({row['spacing']}) | "
              f"{row['domain_fid']:.3f} | {row['domain_fid_floor']:.3f} |" for row in report["samplers"]]
    return "\n".join(lines) + "\n"


def parse_arguments() -> argparse.Namespace:
    """Command-line options; --quick swaps in the smoke-run defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 15 s training, tiny counts, 5 steps")
    add_settings(parser, FULL, QUICK)
    parser.add_argument("--run", type=Path, default=None, help="evaluate this trained run instead of training")
    parser.add_argument("--classifier", default=None, help="a saved domain classifier (default: train one)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return filled_settings(parser.parse_args(), FULL, QUICK)


def add_settings(parser: argparse.ArgumentParser, full: dict, quick: dict) -> None:
    """One --option per benchmark setting (full-run default, smoke-run default in the help)."""
    for name, value in full.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value) if value is not None else int, default=None,
                            help=f"(default {value}; --quick: {quick[name]})")


def filled_settings(args: argparse.Namespace, full: dict, quick: dict) -> argparse.Namespace:
    """The parsed options with every setting left out taken from the full or (--quick) smoke defaults."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def machine_description() -> str:
    """Architecture, processor model, family and model numbers (from /proc/cpuinfo where there is one), core count,
    ATen's vector instruction set and the native-bf16 flags: the same model name ("AMD EPYC") has come with and
    without AVX-512 and bf16 on different days, and the speeds differ by several times."""
    fields: dict[str, str] = {}
    for line in CPUINFO.read_text().splitlines() if CPUINFO.exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    processor = fields.get("model name") or platform.processor() or "unknown processor"
    if "cpu family" in fields:
        processor += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    bf16 = " and ".join(flag.upper() for flag in cpu_bf16_flags()) or "no native bf16"
    return (f"{platform.machine()} {processor}, {os.cpu_count()} cores, "
            f"{torch.backends.cpu.get_cpu_capability()}, {bf16}")


def write_report(report: dict, stem: Path) -> None:
    """Write the report so far as JSON (after every part, so an interrupted run keeps what it measured)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


def finish_report(report: dict, stem: Path, to_markdown: Callable[[dict], str]) -> None:
    """Write the finished report as JSON, then its markdown table beside it; print the table and where both went."""
    write_report(report, stem)
    table = to_markdown(report)
    stem.with_suffix(".md").write_text(table)
    print(table)
    print(f"wrote {stem}.json and {stem}.md in {report['seconds']} s")


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    name = "quality-quick" if args.quick else "quality"
    stem = args.out / name
    run_dir = args.run if args.run else train_model(args.minutes, name, args.quick)
    trained_steps, trained_minutes = trained_so_far(run_dir)
    report = {"date": datetime.date.today().isoformat(), "machine": machine_description(), "quick": args.quick,
              "threads": args.threads, "run": str(run_dir), "training": {"minutes": trained_minutes,
                                                                         "steps": trained_steps}}
    bundle = load(run_dir)
    data = DataConfig(dataset="fashion_mnist", size=28)
    classifier, report["classifier"] = get_classifier(args, data, Path(run_dir))
    test, training = load_split(data, "test"), load_split(data, "train")
    reference_images = reference_subset(test.images, args.reference_n)
    report["reference"] = {"split": "test", "count": int(reference_images.shape[0])}
    inception = Reference(make_extractor("inception", batch_size=50), reference_images, training.images)
    domain = Reference(make_extractor("domain", classifier), reference_images, training.images)
    report["main"] = main_sample_metrics(bundle, args, inception, domain)[0]
    print(f"Inception FID {report['main']['inception_fid']:.2f} (floor {report['main']['inception_fid_floor']:.2f}), "
          f"domain FID {report['main']['domain_fid']:.3f} (floor {report['main']['domain_fid_floor']:.3f})")
    write_report(report, stem)
    report["guidance"] = guidance_metrics(bundle, args, domain, classifier)
    write_report(report, stem)
    report["samplers"] = sampler_sweep(bundle, args, domain)
    report["seconds"] = round(time.perf_counter() - started, 1)
    finish_report(report, stem, markdown)


if __name__ == "__main__":
    main()
