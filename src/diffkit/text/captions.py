"""Caption embeddings for training: every class's caption encoded once and cached, so training never runs the
encoder. The cache is `DATA_DIR/text/captions-<hash of the captions>-<encoder>-<weights SHA-256 prefix>-<tokens>
.safetensors` (fp16 token states + mask), so another encoder, other captions or another token budget never reuse it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from diffkit.errors import DiffkitError
from diffkit.files import atomic_path
from diffkit.text.condition import TextCondition
from diffkit.text.encoder import encoder_digest, load_encoder

CACHE_FOLDER = "text"


@dataclass(frozen=True)
class CaptionTable:
    """Token states (K, L, D) and masks (K, L) of the K class captions; an empty caption has no real token."""

    tokens: Tensor
    mask: Tensor

    def condition(self, labels: Tensor) -> TextCondition:
        """The TextCondition of images with these labels (B,); captionless classes read the null text."""
        mask = self.mask[labels]  # (B, L)
        return TextCondition(self.tokens[labels].float(), mask, ~mask.any(1))

    def to(self, device: torch.device | str) -> CaptionTable:
        """The table on another device."""
        return CaptionTable(self.tokens.to(device), self.mask.to(device))


def dataset_captions(dataset, captions: str) -> list[str]:
    """One caption per class of a dataset: glyph meanings cleaned to plain English, or the class names."""
    if captions == "class_names":
        return list(dataset.class_names)
    if captions != "meanings":
        raise DiffkitError(f"Unknown caption source {captions!r}; choose meanings or class_names.")
    if getattr(dataset, "meanings", None) is None:
        raise DiffkitError("text.captions=meanings needs a dataset with meanings (glyphs with Unihan or "
                           "CC-CEDICT installed); use text.captions=class_names for other labelled data.")
    from diffkit.data.captions import caption_meanings

    return caption_meanings(dataset.class_names, dataset.meanings)


def cache_file(data_dir: Path, captions: list[str], encoder: str, digest: str, max_tokens: int) -> Path:
    """Where the embeddings of exactly these captions under this encoder and token budget are cached."""
    text_hash = hashlib.sha256(json.dumps(captions, ensure_ascii=True).encode("ascii")).hexdigest()[:16]
    return data_dir / CACHE_FOLDER / f"captions-{text_hash}-{encoder}-{digest[:12]}-{max_tokens}.safetensors"


def encode_captions(captions: list[str], encoder: str, max_tokens: int) -> CaptionTable:
    """Run the encoder over the non-empty captions (the slow part: minutes for the 15,000 glyph meanings)."""
    model = load_encoder(encoder)
    present = [index for index, caption in enumerate(captions) if caption]
    tokens = torch.zeros(len(captions), max_tokens, model.width, dtype=torch.float16)
    mask = torch.zeros(len(captions), max_tokens, dtype=torch.bool)
    if present:
        encoded, encoded_mask = model.encode([captions[index] for index in present], max_tokens)
        tokens[present], mask[present] = encoded.half(), encoded_mask
    return CaptionTable(tokens, mask)


def caption_table(captions: list[str], encoder: str, max_tokens: int, data_dir: Path,
                  log=lambda message: None) -> CaptionTable:
    """The cached caption embeddings, computed (and written atomically) the first time."""
    path = cache_file(data_dir, captions, encoder, encoder_digest(encoder), max_tokens)
    if path.is_file():
        try:
            stored = load_file(str(path))
            return CaptionTable(stored["tokens"], stored["mask"].bool())
        except (SafetensorError, OSError, KeyError):
            log(f"the caption cache {path} is unreadable; encoding again")
    log(f"encoding {sum(1 for caption in captions if caption)} captions with {encoder} (once; cached in {path})")
    table = encode_captions(captions, encoder, max_tokens)
    with atomic_path(path) as temporary:
        save_file({"tokens": table.tokens.contiguous(), "mask": table.mask.to(torch.uint8).contiguous()},
                  str(temporary))
    return table
