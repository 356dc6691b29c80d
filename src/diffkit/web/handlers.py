"""What each button of the page does: check the page's values, call the library once, return pictures.

No gradio and no maths here: sampling and editing are the bundle's methods (`Bundle.sample_steps`, `inpaint_steps`,
`img2img_steps`, `interpolate`, `interpolate_prompts`: its rules for labels, prompts, guidance and defaults),
pictures are `diffkit.viz`; this module only bounds the numbers (`LIMITS`), picks the model by name (`ModelShelf`)
and turns tensors into page pictures (`web.pictures`). Every mistake is a `DiffkitError` the page shows as one
sentence; notices (a prompt cut to the encoder's length) go to `Handlers.notify`.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from diffkit.animation import save_gif
from diffkit.errors import DiffkitError
from diffkit.images import save_grid, to_model_range
from diffkit.process import q_sample
from diffkit.sampling import run_to_end
from diffkit.schedule import SCHEDULES, make_schedule
from diffkit.text.prompts import prompt_notices
from diffkit.train_data import load_training_images
from diffkit.viz import forward_strip, plot_schedules, save_figure
from diffkit.web import pictures
from diffkit.web.models import (LIMITS, ModelChoice, ModelShelf, condition_keywords, sample_keywords,
                                    typed)


def whole(value: float | None, what: str, low: int, high: int) -> int:
    """A whole number from the page within [low, high], else one sentence saying the allowed range."""
    if value is None or float(value) != int(value) or not low <= int(value) <= high:
        raise DiffkitError(f"{what} must be a whole number from {low} to {high}, not {value}.")
    return int(value)


def bounded(value: float | None, what: str, low: float, high: float) -> float:
    """A number from the page within [low, high], else one sentence saying the allowed range."""
    if value is None or not low <= float(value) <= high:
        raise DiffkitError(f"{what} must lie between {low:g} and {high:g}, not {value}.")
    return float(value)


class Handlers:
    """The page's actions over a shelf of models; files it makes go to `out_dir` under fresh names, and notices
    (a prompt cut to the encoder's length) go to `notify` (the page shows them as warnings)."""

    def __init__(self, shelf: ModelShelf, out_dir: str | Path, notify: Callable[[str], None] = print):
        self.shelf = shelf
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.notify = notify

    def _file(self, suffix: str) -> Path:
        return self.out_dir / f"{uuid.uuid4().hex}{suffix}"

    def _request(self, model: str, steps: float, seed: float, count: float = 1, guidance: float = 1.0):
        """(choice, bundle, steps, seed, count, guidance) with every number bounded."""
        choice, bundle = self.shelf.get(model)
        return (choice, bundle, whole(steps, "Steps", 1, LIMITS.steps), whole(seed, "The seed", 0, LIMITS.seed),
                whole(count, "The number of images", 1, LIMITS.images),
                bounded(guidance, "Guidance", 0.0, LIMITS.guidance))

    def _condition(self, choice: ModelChoice, label: str | None, prompt: str | None) -> dict:
        """The model kind's keywords for the page's class and prompt; a text prompt's notices are sent first."""
        keywords = condition_keywords(choice, label, prompt)
        if choice.kind == "text":
            for notice in prompt_notices(choice.config, [keywords["prompt"]]):
                self.notify(notice)
        return keywords

    def generate(self, model: str, label: str | None, prompt: str | None, sampler: str, steps: float,
                 guidance: float, seed: float, count: float) -> Iterator[tuple]:
        """Stream (live view, None, None, None) per sampler step, then (live view, grid, PNG path, samples)."""
        choice, bundle, steps, seed, count, guidance = self._request(model, steps, seed, count, guidance)
        trajectory = bundle.sample_steps(count, sampler=sampler, steps=steps, seed=seed, guidance=guidance,
                                         **sample_keywords(self._condition(choice, label, prompt)))
        last = None
        for last in trajectory:
            yield pictures.live_view(last), None, None, None
        path = save_grid(last.x_t.clamp(-1, 1), self._file(".png"))
        yield pictures.live_view(last), pictures.shown(last.x_t), str(path), last.x_t.clamp(-1, 1).cpu().numpy()

    def inpaint(self, model: str, label: str | None, prompt: str | None, editor: dict | None, steps: float,
                seed: float, count: float, guidance: float = 1.0) -> np.ndarray:
        """RePaint-style inpainting of the editor's background where the white brush painted."""
        choice, bundle, steps, seed, count, guidance = self._request(model, steps, seed, count, guidance)
        editor = editor or {}
        image = pictures.to_model(editor.get("background"), bundle.image_shape, "The picture to inpaint")
        regenerate = pictures.painted_mask(editor.get("layers"), bundle.image_shape)  # (H, W)
        results = run_to_end(bundle.inpaint_steps(image, ~regenerate, count, steps=steps, seed=seed, guidance=guidance,
                                                  **self._condition(choice, label, prompt)))
        masked = torch.where(regenerate, torch.ones_like(image), image)  # the regenerated part shown white
        return pictures.shown(torch.cat([image, masked, results]), nrow=count + 2)

    def img2img(self, model: str, label: str | None, prompt: str | None, picture: np.ndarray | None,
                strength: float, steps: float, seed: float, count: float, guidance: float = 1.0) -> np.ndarray:
        """SDEdit: the picture redrawn `count` times at the given strength."""
        choice, bundle, steps, seed, count, guidance = self._request(model, steps, seed, count, guidance)
        image = pictures.to_model(picture, bundle.image_shape, "The picture to redraw")
        strength = bounded(strength, "The strength", 0.01, 1.0)
        results = run_to_end(bundle.img2img_steps(image, strength, count, steps=steps, seed=seed, guidance=guidance,
                                                  **self._condition(choice, label, prompt)))
        return pictures.shown(torch.cat([image, results]), nrow=count + 1)

    def interpolate(self, model: str, label: str | None, prompt: str | None, picture_a: np.ndarray | None,
                    item_a: str, picture_b: np.ndarray | None, item_b: str, prompt_b: str | None, frames: float,
                    steps: float, seed: float = 0, guidance: float = 1.0) -> tuple[np.ndarray, str]:
        """A morph strip and its GIF: between two pictures (uploaded, or dataset items by index or class name)
        through their inverted noise, or for a text model from the prompt into prompt B from one noise."""
        choice, bundle, steps, seed, _, guidance = self._request(model, steps, seed, 1, guidance)
        frames = whole(frames, "The number of frames", 2, LIMITS.frames)
        if choice.kind == "text" or typed(prompt_b) is not None:  # a prompt B on another model: the library refuses
            if typed(prompt_b) is None:
                raise DiffkitError("Prompt B is empty; type the meaning to morph into, such as \"fire\".")
            prompt_a = self._condition(choice, label, prompt).get("prompt", prompt)
            self._condition(choice, None, prompt_b)  # prompt B's notices
            strip = bundle.interpolate_prompts(prompt_a, prompt_b, frames=frames, steps=steps, seed=seed,
                                               guidance=guidance)
        else:
            image_a = self._picture_or_item(choice.name, picture_a, item_a, bundle.image_shape, "Image A")
            image_b = self._picture_or_item(choice.name, picture_b, item_b, bundle.image_shape, "Image B")
            strip = bundle.interpolate(image_a, image_b, frames=frames, steps=steps, guidance=guidance,
                                       **self._condition(choice, label, prompt))
        gif = save_gif([pictures.shown(frame.unsqueeze(0)) for frame in strip], self._file(".gif"), frame_ms=150)
        return pictures.shown(strip, nrow=frames), str(gif)

    def _picture_or_item(self, model: str, picture: np.ndarray | None, item: str, shape, what: str) -> Tensor:
        """An uploaded picture, else the training set's image at an index or of a class name (e.g. a glyph)."""
        if picture is not None:
            return pictures.to_model(picture, shape, what)
        if not item or not item.strip():
            raise DiffkitError(f"{what} is missing; upload a picture or give a dataset index or class name.")
        return self.dataset_image(model, item.strip()).unsqueeze(0)

    def dataset_image(self, model: str, item: str) -> Tensor:
        """The model's training image at index `item` (digits) or the first of class name `item`: (C, H, W)."""
        dataset = _training_images(self.shelf, model)
        names = list(getattr(dataset, "class_names", []))
        if item.isdigit() and int(item) < len(dataset.images):
            return to_model_range(dataset.images[int(item)])
        if item in names:
            index = int(torch.nonzero(dataset.labels == names.index(item))[0])
            return to_model_range(dataset.images[index])
        raise DiffkitError(f"{item!r} is neither an index below {len(dataset.images)} nor a class name of the "
                           "model's dataset.")

    def explain(self, model: str, picture: np.ndarray | None, item: str, t: float,
                seed: float) -> tuple[np.ndarray, str, str, str]:
        """x_t of one image at training step t (model's schedule), its forward strip and the schedule curves."""
        choice, bundle = self.shelf.get(model)
        schedule = bundle.schedule
        t = whole(t, "t", 0, schedule.T - 1)
        generator = torch.Generator().manual_seed(whole(seed, "The seed", 0, LIMITS.seed))
        x0 = self._picture_or_item(choice.name, picture, item, bundle.image_shape, "The picture")  # (1, C, H, W)
        eps = torch.randn(x0.shape, generator=generator)
        x_t = q_sample(schedule, x0, torch.tensor([t]), eps)
        caption = f"t = {t} of {schedule.T}: alpha_bar = {float(schedule.alpha_bar[t]):.4f}"
        schedules = {f"{choice.config.diffusion.schedule} (this model)": schedule}
        schedules.update({name: make_schedule(name, schedule.T) for name in SCHEDULES
                          if name != choice.config.diffusion.schedule})
        strip = save_figure(forward_strip(x0[0], schedules, 8, generator), self._file(".png"))
        curves = save_figure(plot_schedules(schedules), self._file(".png"))
        return pictures.shown(x_t), caption, str(strip), str(curves)


@functools.lru_cache(maxsize=4)
def _training_images(shelf: ModelShelf, model: str):
    """The training set of a served model, read once per model (the synthetic set is made, others are cached)."""
    return load_training_images(shelf.choice(model).config.data)
