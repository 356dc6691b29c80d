"""The text-model evaluation protocol: the held-out glyph data, the judges, samples per guidance scale, and one
record of radical accuracy, meaning retrieval, held-out domain FID and memorisation beside ceilings and floors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffkit.data.dataset import ImageDataset
from diffkit.errors import DiffkitError
from diffkit.evaluate import text_metrics as judged
from diffkit.seeds import subset_indices
from diffkit.text.captions import CaptionTable


@dataclass
class TextEvalData:
    """Training glyphs (what the model and the judges learn from), the held-out ones, radicals and captions."""

    train: ImageDataset  # class_names cover train and held-out characters; images only the training ones
    test: ImageDataset  # the held-out characters' glyphs (labels index the same class_names)
    radicals: Tensor  # (K,) Kangxi radical of every class (0: unknown)
    table: CaptionTable  # (K, ...) cached caption embeddings of every class


def glyph_eval_data(data, text, limit: int | None = None, log: Callable[[str], None] = print) -> TextEvalData:
    """The glyph set's splits, radicals and caption embeddings; `limit` keeps the first `limit` training and
    limit // 2 held-out characters with a meaning (a smoke run then encodes hundreds of captions, not 15,000)."""
    from diffkit.data.captions import glyph_metadata
    from diffkit.data.dataset import resolve_data_dir
    from diffkit.evaluate.protocol import load_split
    from diffkit.text.captions import caption_table, dataset_captions

    if data.dataset != "glyphs" or text.captions != "meanings":
        raise DiffkitError("The text metrics judge glyphs drawn from meanings; the run must use dataset glyphs "
                           "with text.captions=meanings.")
    train, test = load_split(data, "train"), load_split(data, "test")
    if limit is not None:
        train, test = _first_characters(train, test, limit)
    radicals = glyph_metadata(train.class_names, train.meanings).radicals
    captions = dataset_captions(train, text.captions)
    table = caption_table(captions, text.encoder, text.max_tokens, resolve_data_dir(data.data_dir), log)
    return TextEvalData(train, test, radicals, table)


def _first_characters(train: ImageDataset, test: ImageDataset, limit: int) -> tuple[ImageDataset, ImageDataset]:
    """Both splits cut to their first characters with a meaning, relabelled 0..K-1 over the kept characters."""
    captioned = [label for label in range(train.num_classes) if train.meanings and train.meanings[label]]
    train_labels = set(train.labels.tolist())
    chosen_train = [label for label in captioned if label in train_labels][:limit]
    chosen_test = [label for label in captioned if label not in train_labels][:max(limit // 2, judged.GROUP)]
    kept = chosen_train + chosen_test
    relabel = torch.full((train.num_classes,), -1, dtype=torch.long)
    relabel[kept] = torch.arange(len(kept))
    names = [train.class_names[label] for label in kept]
    meanings = [train.meanings[label] for label in kept]

    def cut(split: ImageDataset) -> ImageDataset:
        keep = relabel[split.labels] >= 0
        return ImageDataset(split.images[keep], relabel[split.labels[keep]], names, meanings, split.name,
                            dict(split.info, limited_to=limit))

    return cut(train), cut(test)


def generate(bundle, condition, n: int, *, guidance: float, sampler: str, steps: int, seed: int,
             batch_size: int) -> Tensor:
    """n samples as uint8 (n, C, H, W): row i for condition row i (a TextCondition), or unconditional (None)."""
    from diffkit.images import to_uint8
    from diffkit.train_data import derive_seed

    chunks = []
    for batch, start in enumerate(range(0, n, batch_size)):
        count = min(batch_size, n - start)
        rows = None if condition is None else condition.select(slice(start, start + count))
        chunks.append(to_uint8(bundle.sample(count, labels=rows, guidance=guidance if rows is not None else 1.0,
                                             sampler=sampler, steps=steps, seed=derive_seed(seed, batch))))
    return torch.cat(chunks)


def text_evaluation(bundle, data: TextEvalData, judges: judged.Judges, *, count: int, scales: list[float],
                    sampler: str = "dpmpp_2m", steps: int = 20, seed: int = 0, batch_size: int = 256,
                    log: Callable[[str], None] = print) -> dict:
    """Radical accuracy, meaning retrieval, held-out domain FID and memorisation at every guidance scale."""
    from diffkit.evaluate.memorisation import memorisation, memorised_fraction

    held = judged.held_out_set(data.test.images, data.test.labels, data.radicals, data.table, judges, count)
    n = len(held.labels) - len(held.labels) % judged.GROUP
    if n < judged.GROUP:
        raise DiffkitError(f"Only {len(held.labels)} held-out meanings have a judged radical; need {judged.GROUP}.")
    held = judged.HeldOut(held.labels[:n], held.images[:n], held.radical_classes[:n])
    sentences = judged.sentence_embeddings(data.table, held.labels)
    training_sample = data.train.images[subset_indices(len(data.train.images), n, seed)]
    everything = torch.cat([data.train.images, data.test.images])
    record = {
        "held_out_meanings": n, "sampler": sampler, "steps": steps, "seed": seed,
        "judged_radicals": len(judges.radicals),
        "ceiling": {"radical_accuracy": judged.radical_accuracy(judges, held.images, held),
                    **{f"retrieval_{key}": value for key, value in judged.retrieval(judges, held.images,
                                                                                  sentences).items()},
                    "fid_train_vs_held_out": judged.domain_fid(judges, training_sample, held.images)},
        "chance": {"retrieval_top1": 1 / judged.GROUP, "retrieval_top5": 5 / judged.GROUP},
        "guidance": {},
    }
    log(f"unconditional floor: {n} samples")
    unconditional = generate(bundle, None, n, guidance=1.0, sampler=sampler, steps=steps, seed=seed,
                             batch_size=batch_size)
    record["floor"] = _measure(judges, unconditional, held, sentences)
    conditions = judged.held_out_conditions(data.table, held)
    for scale in scales:
        log(f"guidance {scale}: {n} samples for the held-out meanings")
        samples = generate(bundle, conditions, n, guidance=scale, sampler=sampler, steps=steps, seed=seed,
                           batch_size=batch_size)
        results = _measure(judges, samples, held, sentences)
        results["memorised_fraction"] = memorised_fraction(memorisation(samples, everything))
        record["guidance"][str(scale)] = results
    return record


def _measure(judges: judged.Judges, samples: Tensor, held: judged.HeldOut, sentences: Tensor) -> dict[str, float]:
    """The three metrics of one set of samples (row i drawn for held-out meaning i)."""
    retrieval = judged.retrieval(judges, samples, sentences)
    return {"radical_accuracy": judged.radical_accuracy(judges, samples, held),
            "retrieval_top1": retrieval["top1"], "retrieval_top5": retrieval["top5"],
            "fid_held_out": judged.domain_fid(judges, samples, held.images)}


def judges_for(data: TextEvalData, directory: str | Path | None, *, steps: int, seed: int = 0,
               min_examples: int = 50, log: Callable[[str], None] = print) -> judged.Judges:
    """Load the judges from `directory`, or train them on the training glyphs (and save them there)."""
    if directory is not None and (Path(directory) / judged.RADICAL_JUDGE).is_dir():
        return judged.load_judges(directory)
    log(f"training the radical classifier and the meaning encoder ({steps} steps each)")
    judges = judged.train_judges(data.train.images, data.train.labels, data.radicals, data.table, steps=steps,
                                 seed=seed, min_examples=min_examples)
    if directory is not None:
        judged.save_judges(judges, directory, steps=steps, seed=seed, min_examples=min_examples)
    return judges


def format_text_table(record: dict) -> str:
    """A markdown table: one row per guidance scale, then the ceiling, floor and chance rows."""
    columns = ("radical_accuracy", "retrieval_top1", "retrieval_top5", "fid_held_out", "memorised_fraction")
    lines = ["| samples | radical acc. | retrieval top-1 | top-5 | domain FID | memorised |",
             "|---|---|---|---|---|---|"]

    def row(name: str, values: dict) -> str:
        cells = [f"{values[key]:.3f}" if isinstance(values.get(key), float) else "" for key in columns]
        return f"| {name} | " + " | ".join(cells) + " |"

    for scale, values in record["guidance"].items():
        lines.append(row(f"guidance {scale}", values))
    ceiling = dict(record["ceiling"], fid_held_out=record["ceiling"]["fid_train_vs_held_out"])
    lines.append(row("real held-out glyphs (ceiling; FID: training vs held-out)", ceiling))
    lines.append(row("unconditional samples (floor)", record["floor"]))
    lines.append(row("chance", record["chance"]))
    return "\n".join(lines)
