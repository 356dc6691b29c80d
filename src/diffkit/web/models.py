"""The models a page serves: found once at start-up, chosen by name only, loaded on first use.

The page never sends a path: it sends one of the names `find_models` listed, and `ModelShelf.get` refuses any other.
`MODEL_KINDS` is the one place that knows how each kind of model is conditioned (unconditional, class ids, a prompt
for text models; a latent bundle needs no entry), and `LIMITS` bounds every number the page can send.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from diffkit.bundle import CONFIG_FILE, WEIGHTS_FILE, Bundle, load
from diffkit.config import Config
from diffkit.errors import DiffkitError
from diffkit.text.prompts import check_prompt_use

SEARCHED = ("runs", "models")  # folders searched (two levels deep) when no bundle is named
TEXT_GUIDANCE = 5.0  # the README's and `make text-pictures`' scale for text models


@dataclass(frozen=True)
class Limits:
    """Upper bounds on what one request may ask for, so one page cannot occupy the CPU for long."""

    images: int = 16  # images per request
    steps: int = 200  # sampler steps per request
    guidance: float = 20.0  # classifier-free guidance scale
    frames: int = 16  # interpolation frames
    upload_pixels: int = 2048 * 2048  # width x height of an uploaded picture
    upload_bytes: int = 8 * 1024 * 1024  # size of an uploaded file (given to gradio's launch)
    seed: int = 2**31 - 1


LIMITS = Limits()


@dataclass(frozen=True)
class ModelChoice:
    """One servable bundle: the name the page shows, where it lives, its config and kind."""

    name: str
    path: Path
    config: Config

    @property
    def kind(self) -> str:
        """The model kind, a key of MODEL_KINDS."""
        model = self.config.model
        if model.context_dim > 0:
            return "text"
        return "class" if model.num_classes > 0 else "unconditional"

    @property
    def guidance(self) -> float:
        """The guidance scale the page starts with: 5 for text (a meaning needs guidance to show), else 1."""
        return TEXT_GUIDANCE if self.kind == "text" else 1.0

    @property
    def classes(self) -> list[str]:
        """The class ids a class model takes, as the strings a dropdown shows ("0", "1", ...)."""
        return [str(k) for k in range(self.config.model.num_classes)]


def typed(prompt: str | None) -> str | None:
    """A prompt box's text, or None when it is blank (a hidden, empty box still sends "")."""
    return prompt if prompt is not None and prompt.strip() else None


def _passed_on(prompt: str | None) -> dict:
    """A prompt sent for a model without text goes to the library, whose rule refuses it in one sentence."""
    return {} if typed(prompt) is None else {"prompt": prompt}


def _no_condition(choice: ModelChoice, label: str | None, prompt: str | None) -> dict:
    """Unconditional models take no label; guidance other than 1 is refused by the library's check."""
    return _passed_on(prompt)


def _class_condition(choice: ModelChoice, label: str | None, prompt: str | None) -> dict:
    """A class model: one class id for every image, or none (the library cycles through the classes)."""
    if label in (None, "", "all"):
        return _passed_on(prompt)
    if label not in choice.classes:
        raise DiffkitError(f"Class {label!r} is not one of this model's classes 0-{len(choice.classes) - 1}.")
    return {"label": int(label), **_passed_on(prompt)}


def _text_condition(choice: ModelChoice, label: str | None, prompt: str | None) -> dict:
    """A text model: one prompt for every image (the bundle encodes it), never a class label."""
    if label not in (None, "", "all"):
        check_prompt_use(choice.config, None, label)  # the library's sentence for a label on a text model
    if typed(prompt) is None:
        raise DiffkitError("A prompt is empty; type the English meaning to draw, such as \"water\" (at guidance 0 "
                           "the model ignores it and draws unconditional images).")
    return {"prompt": prompt}


# Model kind -> the keywords (label=..., prompt=...) it adds to the Bundle's editing methods (`sample_keywords` turns
# them into sampling's). A latent bundle needs no entry: the bundle decodes.
MODEL_KINDS: dict[str, Callable[[ModelChoice, str | None, str | None], dict]] = {
    "unconditional": _no_condition,
    "class": _class_condition,
    "text": _text_condition,
}


def condition_keywords(choice: ModelChoice, label: str | None = None, prompt: str | None = None) -> dict:
    """The conditioning keywords for a request to this model, refused in one sentence for unserved kinds."""
    if choice.kind not in MODEL_KINDS:
        raise DiffkitError(f"The model {choice.name} is a {choice.kind} model, which the page cannot serve yet.")
    return MODEL_KINDS[choice.kind](choice, label, prompt)


def sample_keywords(keywords: dict) -> dict:
    """Editing keywords as `Bundle.sample_steps` takes them: its `prompts` holds the page's one prompt (all images)."""
    keywords = dict(keywords)
    if "prompt" in keywords:
        keywords["prompts"] = [keywords.pop("prompt")]
    return keywords


def read_choice(path: Path, name: str) -> ModelChoice:
    """A ModelChoice for a bundle directory, reading only its config (the weights load on first use)."""
    config_path = path / CONFIG_FILE
    if not config_path.is_file() or not (path / WEIGHTS_FILE).is_file():
        raise DiffkitError(f"{path} is not a bundle; it needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        config = Config.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DiffkitError(f"Cannot parse {config_path} ({error}).") from error
    return ModelChoice(name, path, config)


def find_models(paths: list[str | Path] | None = None, root: Path = Path(".")) -> list[ModelChoice]:
    """The bundles named in `paths` (each must be one), else every bundle under runs/ and models/ (two levels)."""
    if paths:
        chosen = [read_choice(Path(path), str(path).rstrip("/")) for path in paths]
    else:
        found = sorted({config.parent for folder in SEARCHED if (root / folder).is_dir()
                        for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}")
                        for config in (root / folder).glob(pattern) if (config.parent / WEIGHTS_FILE).is_file()})
        chosen = []
        for path in found:
            try:
                chosen.append(read_choice(path, path.relative_to(root).as_posix()))
            except DiffkitError as error:  # one damaged run must not hide the others
                print(f"diffkit serve: skipping {path}: {error}")
    names = [choice.name for choice in chosen]
    if len(set(names)) != len(names):
        raise DiffkitError("Two bundles have the same name; pass each bundle once.")
    return chosen


class ModelShelf:
    """The served models by name; each bundle loads once, on first use, under a lock."""

    def __init__(self, choices: list[ModelChoice], device: str = "cpu"):
        if not choices:
            raise DiffkitError("No model to serve: pass a run directory or bundle, or train one first (make demo).")
        self.choices = {choice.name: choice for choice in choices}
        self.device = device
        self._loaded: dict[str, Bundle] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """The names the page may choose from, in order."""
        return list(self.choices)

    def choice(self, name: str) -> ModelChoice:
        """The ModelChoice called `name`; anything else (a path, a typo) is refused."""
        if name not in self.choices:
            raise DiffkitError(f"Unknown model {name!r}; choose one of: {', '.join(self.choices)}.")
        return self.choices[name]

    def get(self, name: str) -> tuple[ModelChoice, Bundle]:
        """(choice, loaded bundle) for a listed name."""
        choice = self.choice(name)
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = load(choice.path, device=self.device)
            return choice, self._loaded[name]
