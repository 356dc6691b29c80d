"""The web page with a text model, without a browser: the tiny text bundle exported fp16 under models/ (as `diffkit
export` ships one) is listed by name, its prompt goes through the bundle's rules in every tab, bad prompts are one
sentence each, a long prompt gets the command line's notice, and the page shows the prompt boxes for it."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffkit.errors import DiffkitError
from diffkit.text.encoder import PromptTruncated
from diffkit.web import pictures
from diffkit.web.handlers import Handlers
from diffkit.web.models import ModelShelf, find_models
from diffkit.web.pictures import CANVAS
from tiny_run import one_thread
from web_bundles import write_tiny_bundles, write_tiny_text_bundle

pytestmark = pytest.mark.usefixtures("single_thread")
PICTURE = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)


@pytest.fixture
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    write_tiny_text_bundle(write_tiny_bundles(root))
    return Handlers(ModelShelf(find_models(root=root)), root / "out")


@pytest.fixture
def notices(handlers):
    """The notices the page would show, collected for one test."""
    shown = []
    handlers.notify = shown.append
    yield shown
    handlers.notify = print


def generate(handlers, **changes):
    values = dict(model="models/text", label="all", prompt="water", sampler="ddim", steps=4, guidance=3.0, seed=0,
                  count=2)
    values.update(changes)
    return list(handlers.generate(*values.values()))


def test_fp16_text_bundles_under_models_are_listed_by_name(handlers):
    shelf = handlers.shelf
    assert shelf.names == ["models/plain", "models/text", "runs/text", "runs/tiny"]
    assert [shelf.choice(name).kind for name in shelf.names] == ["unconditional", "text", "text", "class"]
    weights = load_file(str(shelf.choice("models/text").path / "model.safetensors"))
    assert all(value.dtype == torch.float16 for value in weights.values() if value.is_floating_point())
    assert shelf.choice("models/text").guidance == 5.0 and shelf.choice("runs/tiny").guidance == 1.0


def test_generate_draws_one_prompt_as_the_bundle_does(handlers, notices):
    _, bundle = handlers.shelf.get("models/text")
    expected = bundle.sample(2, sampler="ddim", steps=4, seed=1, guidance=3.0, prompts=["water"]).clamp(-1, 1)
    updates = generate(handlers, seed=1)
    assert len(updates) == 4 + 2 and np.array_equal(updates[-1][3], expected.numpy())
    assert not np.array_equal(updates[-1][3], generate(handlers, seed=1, prompt="fire")[-1][3])
    assert notices == []


@pytest.mark.parametrize("change, message", [
    ({"prompt": "  "}, "A prompt is empty; type the English meaning to draw"),
    ({"prompt": None}, "A prompt is empty"),
    ({"label": "1"}, "This is a text model, which takes a prompt, not a class label"),
    ({"model": "runs/tiny", "guidance": 1.0}, "This model was not trained with text"),
    ({"model": "models/plain", "guidance": 1.0}, "This model was not trained with text"),
])
def test_bad_prompts_are_one_sentence(handlers, change, message):
    with pytest.raises(DiffkitError, match=message):
        generate(handlers, **change)


def test_a_long_prompt_gets_the_command_lines_notice(handlers, notices):
    with pytest.warns(PromptTruncated) as caught:
        generate(handlers, prompt="a very long meaning " * 20, count=1)
    assert notices == [str(caught[0].message)] and "first 24" in notices[0]


def test_edits_take_the_prompt(handlers):
    layer = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)
    layer[:, CANVAS // 2:, 3] = 255
    editor = {"background": PICTURE, "layers": [layer]}
    inpainted = [handlers.inpaint("models/text", "all", prompt, editor, 4, 0, 2, 3.0) for prompt in ("1", "2")]
    redrawn = [handlers.img2img("models/text", "all", prompt, PICTURE, 0.9, 4, 0, 2, 3.0) for prompt in ("1", "2")]
    for first, second in (inpainted, redrawn):  # the guided prediction depends on the meaning
        assert first.shape == second.shape and not np.array_equal(first, second)
    with pytest.raises(DiffkitError, match="A prompt is empty"):
        handlers.img2img("models/text", "all", "", PICTURE, 0.9, 4, 0, 2, 3.0)


def test_interpolate_morphs_the_prompt_into_prompt_b(handlers):
    _, bundle = handlers.shelf.get("models/text")
    strip, gif = handlers.interpolate("models/text", "all", "water", None, "0", None, "1", "fire", 3, 4, 2, 3.0)
    expected = bundle.interpolate_prompts("water", "fire", frames=3, steps=4, seed=2, guidance=3.0)
    assert np.array_equal(strip, pictures.shown(expected, nrow=3)) and gif.endswith(".gif")
    with pytest.raises(DiffkitError, match="Prompt B is empty"):
        handlers.interpolate("models/text", "all", "water", None, "0", None, "1", " ", 3, 4, 2, 3.0)
    with pytest.raises(DiffkitError, match="This model was not trained with text"):
        handlers.interpolate("runs/tiny", "all", "", None, "0", None, "1", "fire", 3, 4, 2, 1.0)


def test_the_page_shows_the_prompt_boxes_for_text_models_only(handlers):
    from diffkit.web.app import build_app, model_controls

    label, prompt, prompt_b, morph_pictures, *guidance = model_controls(handlers.shelf, "models/text")
    assert not label["visible"] and prompt == prompt_b == {"__type__": "update", "visible": True}
    assert not morph_pictures["visible"] and [update["value"] for update in guidance] == [5.0] * 3
    label, prompt, _, morph_pictures, *guidance = model_controls(handlers.shelf, "runs/tiny")
    assert label["visible"] and not prompt["visible"] and prompt["value"] == ""  # no hidden prompt is sent
    assert morph_pictures["visible"] and [update["value"] for update in guidance] == [1.0] * 3
    app = build_app(ModelShelf([handlers.shelf.choice("models/text"), handlers.shelf.choice("runs/tiny")]),
                    str(handlers.out_dir))
    shown = {block.elem_id: block.visible for block in app.blocks.values() if getattr(block, "elem_id", None)}
    assert shown["prompt"] and shown["prompt-b"] and not shown["class"] and shown["generate-guidance"]
    for dependency in app.fns.values():  # every handler takes exactly the inputs the page wires to it
        if getattr(dependency.fn, "__wrapped__", None) is not None:
            inspect.signature(dependency.fn.__wrapped__).bind(*dependency.inputs)
