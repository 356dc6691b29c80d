"""Prompts -> the y a text model samples with: the one function (`prompt_condition`, called by `Bundle.labels_for`)
that turns English into a TextCondition, with every bad combination refused in one sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from diffkit.errors import DiffkitError
from diffkit.text.condition import TextCondition


def is_text_model(config) -> bool:
    """True when a run's config describes a text-conditioned model."""
    return config.model.context_dim > 0 and config.text.captions != "none"


def check_prompt_use(config, prompts: Sequence[str] | None, label: int | None = None) -> None:
    """Refuse prompts on a model without text, a class label on a text model and prompts with a class label."""
    if prompts is None:
        if label is not None and is_text_model(config):
            raise DiffkitError("This is a text model, which takes a prompt, not a class label; pass --prompt "
                               "instead of --label.")
        return
    if not is_text_model(config):
        raise DiffkitError("This model was not trained with text (model.context_dim=0), so it takes no prompt; "
                           "drop --prompt, or train a text model such as --config glyphs32-text.")
    if label is not None:
        raise DiffkitError("--prompt and --label do not go together: a text model takes a prompt, "
                           "a class-conditional model a label; drop one of them.")
    if len(prompts) == 0:
        raise DiffkitError("No prompt was given; pass at least one meaning such as \"water\".")


def prompt_condition(config, prompts: Sequence[str] | None, n: int | None = None,
                     label: int | None = None) -> TextCondition:
    """The TextCondition for n images: one prompt for all, or len(prompts) equal groups (one grid row each).

    `Bundle.labels_for` is its caller: every sampling and editing entry point gets its y there, so a prompt is
    checked the same way everywhere (no prompt with a label, none on a model without text)."""
    from diffkit.text.encoder import encode_prompts, encoder_digest

    check_prompt_use(config, prompts, label)
    n = len(prompts) if n is None else n
    if n % len(prompts) != 0:
        raise DiffkitError(f"{n} images cannot be shared evenly among {len(prompts)} prompts; "
                           f"ask for a multiple of {len(prompts)}.")
    text = config.text
    if text.encoder_sha256 is not None and encoder_digest(text.encoder) != text.encoder_sha256:
        raise DiffkitError(f"This model was trained with other {text.encoder} weights "
                           f"({text.encoder_sha256[:12]}...) than the installed ones; reinstall those.")
    condition = encode_prompts(list(prompts), text.encoder, text.max_tokens)
    return condition.repeat_interleave(n // len(prompts))


def prompt_notices(config, prompts: Sequence[str]) -> list[str]:
    """The notices encoding these prompts for this model will give (a prompt cut to `text.max_tokens`), as
    sentences, for callers that show them otherwise than as warnings (the web page)."""
    from diffkit.text.encoder import truncation_notices

    return truncation_notices(list(prompts), config.text.encoder, config.text.max_tokens)


def read_prompt_file(path: str | Path) -> list[str]:
    """One prompt per non-blank line of a UTF-8 text file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot read the prompt file {path} ({error}); pass a UTF-8 text file, "
                           "one prompt per line.") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise DiffkitError(f"The prompt file {path} holds no prompt; write one meaning per line.")
    return prompts

