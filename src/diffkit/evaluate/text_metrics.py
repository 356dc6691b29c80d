"""Metrics of a text-to-glyph model on the held-out characters' meanings (issue 11), each beside its ceiling and floor.

- radical accuracy: a radical classifier (the domain CNN, trained on real training-split glyphs over the radicals
  with at least `min_examples` of them) reads the generated glyph; the share whose radical is the real character's.
  Ceiling: its accuracy on the real held-out glyphs. Floor: the same share for unconditional samples.
- meaning retrieval: a contrastive image encoder (the domain CNN with a 384-wide head) trained on the training
  split against the MiniLM sentence embeddings of the meanings; for each held-out meaning, the rank of the true
  meaning among its group of 32 held-out meanings for the generated glyph. Top-1 / top-5 beside real glyphs and
  chance (1/32, 5/32).
- held-out domain FID: radical-classifier features of the generated glyphs against the real held-out glyphs,
  beside the real floor (as many training glyphs against the held-out ones); and the memorisation check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.evaluate import classifier as domain
from diffkit.evaluate import metrics
from diffkit.text.captions import CaptionTable
from diffkit.text.condition import TextCondition

GROUP = 32  # candidates per retrieval question
RADICAL_JUDGE, MEANING_JUDGE = "radical-classifier", "meaning-encoder"


@dataclass(frozen=True)
class HeldOut:
    """The held-out characters that have a meaning and a judged radical: labels, images, radical classes."""

    labels: Tensor  # (M,) class ids into the dataset's characters
    images: Tensor  # (M, 1, H, W) uint8, the real glyphs
    radical_classes: Tensor  # (M,) index into Judges.radicals


@dataclass
class Judges:
    """The two trained judges and the radical numbers the classifier's classes stand for."""

    radical: domain.DomainClassifier
    meaning: domain.DomainClassifier
    radicals: list[int]


def sentence_embeddings(table: CaptionTable, labels: Tensor) -> Tensor:
    """Unit MiniLM sentence embeddings (mean of the real token states, as MiniLM pools) of these classes (N, D)."""
    mask = table.mask[labels].float()[..., None]  # (N, L, 1)
    pooled = (table.tokens[labels].float() * mask).sum(1) / mask.sum(1).clamp_min(1)
    return F.normalize(pooled, dim=1)


def train_meaning_encoder(images: Tensor, sentences: Tensor, *, steps: int, generator: torch.Generator,
                          batch_size: int = 128, learning_rate: float = 3e-3, width: int = 24,
                          temperature: float = 0.07) -> domain.DomainClassifier:
    """A CNN mapping glyphs (N, 1, H, W) uint8 onto their meanings' unit embeddings (N, D): symmetric InfoNCE
    (CLIP, Radford et al. 2021, eq. in Fig. 3) against the frozen sentence embeddings."""
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = domain.DomainClassifier(domain.ClassifierConfig(images.shape[1], sentences.shape[1], width))
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps)
        model.train()
        for _ in range(steps):
            batch = torch.randint(images.shape[0], (batch_size,), generator=generator)
            embedded = F.normalize(model(domain.as_model_input(images[batch])), dim=1)  # (B, D)
            logits = embedded @ sentences[batch].T / temperature  # (B, B): image i against meaning j
            target = torch.arange(batch_size)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def radical_classes(radicals: Tensor, min_examples: int) -> list[int]:
    """The radicals (1..214) that at least `min_examples` of the given characters have, in numeric order."""
    counts = torch.bincount(radicals, minlength=215)
    return [radical for radical in range(1, 215) if counts[radical] >= min_examples]


def train_judges(train_images: Tensor, train_labels: Tensor, radicals: Tensor, table: CaptionTable, *,
                 steps: int, seed: int = 0, min_examples: int = 50) -> Judges:
    """Train the radical classifier and the meaning encoder on real training-split glyphs."""
    kept = radical_classes(radicals[train_labels], min_examples)
    if len(kept) < 2:
        raise DiffkitError(f"Fewer than 2 radicals have {min_examples} training glyphs; lower min_examples.")
    lookup = torch.full((215,), -1, dtype=torch.long)
    lookup[kept] = torch.arange(len(kept))
    target = lookup[radicals[train_labels]]  # (N,) -1 for rare radicals
    judged = target >= 0
    generator = torch.Generator().manual_seed(seed)
    radical = domain.train_classifier(train_images[judged], target[judged], steps=steps, generator=generator,
                                      num_classes=len(kept))
    captioned = table.mask[train_labels].any(1)
    meaning = train_meaning_encoder(train_images[captioned],
                                    sentence_embeddings(table, train_labels[captioned]), steps=steps,
                                    generator=generator)
    return Judges(radical, meaning, kept)


def held_out_set(test_images: Tensor, test_labels: Tensor, radicals: Tensor, table: CaptionTable, judges: Judges,
                 count: int | None = None) -> HeldOut:
    """The held-out characters with a meaning and a judged radical (the first `count`, in code-point order)."""
    lookup = torch.full((215,), -1, dtype=torch.long)
    lookup[judges.radicals] = torch.arange(len(judges.radicals))
    classes = lookup[radicals[test_labels]]
    keep = (classes >= 0) & table.mask[test_labels].any(1)
    order = torch.argsort(test_labels[keep])[:count]
    return HeldOut(test_labels[keep][order], test_images[keep][order], classes[keep][order])


def radical_accuracy(judges: Judges, images: Tensor, held_out: HeldOut) -> float:
    """Share of images (one per held-out meaning, in order) whose predicted radical is the real character's."""
    return (domain.predict(judges.radical, images) == held_out.radical_classes).float().mean().item()


def retrieval(judges: Judges, images: Tensor, sentences: Tensor) -> dict[str, float]:
    """Top-1 / top-5 of the true meaning among its group of 32 (images[i] belongs to sentences[i])."""
    embedded = F.normalize(domain.logits(judges.meaning, images), dim=1)  # (M, D)
    ranks = []
    for start in range(0, len(images) - GROUP + 1, GROUP):  # whole groups only, so chance is exactly 1/32
        similarity = embedded[start:start + GROUP] @ sentences[start:start + GROUP].T  # (32, 32)
        true = similarity.diagonal()[:, None]
        ranks.append((similarity > true).sum(1))  # 0 = the true meaning ranked first
    if not ranks:
        raise DiffkitError(f"Meaning retrieval needs at least {GROUP} held-out meanings.")
    rank = torch.cat(ranks)
    return {"top1": (rank < 1).float().mean().item(), "top5": (rank < 5).float().mean().item()}


def domain_fid(judges: Judges, fake: Tensor, real: Tensor) -> float:
    """FID in the radical classifier's penultimate features."""
    fake_statistics = metrics.feature_statistics(domain.features(judges.radical, fake))
    return metrics.frechet_distance(*fake_statistics, *metrics.feature_statistics(domain.features(judges.radical,
                                                                                                  real)))


def held_out_conditions(table: CaptionTable, held_out: HeldOut) -> TextCondition:
    """The cached caption embeddings of the held-out meanings, one row per held-out character."""
    return table.condition(held_out.labels)


def save_judges(judges: Judges, directory: str | Path, **record) -> Path:
    """Save both judges (safetensors + JSON with SHA-256) under `directory`."""
    directory = Path(directory)
    domain.save_classifier(judges.radical, directory / RADICAL_JUDGE, radicals=judges.radicals, **record)
    domain.save_classifier(judges.meaning, directory / MEANING_JUDGE, **record)
    return directory


def load_judges(directory: str | Path) -> Judges:
    """Load judges saved by `save_judges` (checksums checked)."""
    import json

    directory = Path(directory)
    radical = domain.load_classifier(directory / RADICAL_JUDGE)
    record = json.loads((directory / RADICAL_JUDGE / domain.CONFIG_NAME).read_text())
    return Judges(radical, domain.load_classifier(directory / MEANING_JUDGE), record["metadata"]["radicals"])
