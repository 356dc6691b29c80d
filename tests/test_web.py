"""The web page's handlers and model shelf without a browser: bounds, names only, streaming, editing, errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from diffkit.cli import build_parser
from diffkit.errors import DiffkitError
from diffkit.web import require_gradio
from diffkit.web.handlers import Handlers
from diffkit.web.models import LIMITS, ModelShelf, find_models
from diffkit.web.pictures import CANVAS, painted_mask
from tiny_run import one_thread  # noqa: F401  (fixture)
from web_bundles import write_tiny_bundles

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def single_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def handlers(tmp_path_factory):
    root = write_tiny_bundles(tmp_path_factory.mktemp("bundles"))
    return Handlers(ModelShelf(find_models(root=root)), root / "out")


def generate(handlers, **changes):
    values = dict(model="runs/tiny", label="all", prompt=None, sampler="ddim", steps=4, guidance=1.0, seed=0, count=2)
    values.update(changes)
    return list(handlers.generate(*values.values()))


def test_models_are_found_under_runs_and_models_and_chosen_by_name_only(handlers):
    shelf = handlers.shelf
    assert shelf.names == ["models/plain", "runs/tiny"]
    assert [shelf.choice(name).kind for name in shelf.names] == ["unconditional", "class"]
    for not_a_name in ("/etc", "../runs/tiny", str(shelf.choice("runs/tiny").path)):
        with pytest.raises(DiffkitError, match="Unknown model"):
            shelf.get(not_a_name)


def test_generate_streams_every_step_then_the_grid_and_a_png(handlers):
    updates = generate(handlers)
    assert len(updates) == 4 + 2  # 4 sampler steps, the finished step, then the grid
    live_first, live_last = updates[0][0], updates[-2][0]
    assert live_first.shape == live_last.shape and not np.array_equal(live_first, live_last)
    assert all(update[1] is None for update in updates[:-1])
    _, grid, png, samples = updates[-1]
    assert samples.shape == (2, 1, 8, 8) and grid.dtype == np.uint8
    with open(png, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_generate_is_the_library_sample_and_the_seed_changes_it(handlers):
    _, bundle = handlers.shelf.get("runs/tiny")
    expected = bundle.sample(2, sampler="ddim", steps=4, seed=3, label=1).clamp(-1, 1)
    samples = generate(handlers, seed=3, label="1")[-1][3]
    assert np.array_equal(samples, expected.numpy())
    assert not np.array_equal(samples, generate(handlers, seed=4, label="1")[-1][3])


@pytest.mark.parametrize("change, message", [
    ({"count": LIMITS.images + 1}, "number of images must be a whole number from 1 to 16"),
    ({"steps": 0}, "Steps must be a whole number from 1 to 200"),
    ({"guidance": 50}, "Guidance must lie between 0 and 20"),
    ({"sampler": "magic"}, "Unknown sampler 'magic'"),
    ({"label": "7"}, "Class '7' is not one of this model's classes 0-3"),
    ({"model": "models/plain", "guidance": 3}, "unconditional"),
])
def test_bad_requests_are_one_sentence(handlers, change, message):
    with pytest.raises(DiffkitError, match=message):
        generate(handlers, **change)


def test_the_painted_part_of_a_layer_becomes_the_mask_at_the_model_size():
    layer = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)
    layer[:, CANVAS // 2:, 3] = 255  # the right half painted
    mask = painted_mask([layer], (1, 8, 8))
    assert mask.shape == (8, 8) and mask[:, 4:].all() and not mask[:, :4].any()
    with pytest.raises(DiffkitError, match="Nothing is painted"):
        painted_mask([np.zeros_like(layer)], (1, 8, 8))


def test_inpaint_keeps_the_unpainted_pixels_and_img2img_and_interpolate_run(handlers):
    picture = np.tile(np.arange(0, 256, 32, dtype=np.uint8).repeat(CANVAS // 8), (CANVAS, 1))  # (256, 256)
    picture = np.stack([picture] * 3, axis=2)
    layer = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)
    layer[:, CANVAS // 2:, 3] = 255
    grid = handlers.inpaint("runs/tiny", "2", None, {"background": picture, "layers": [layer]}, 5, 0, 2)
    factor = 12  # one row: picture, masked picture, 2 results; 8x8 tiles with 2 px padding, enlarged 12x
    assert grid.shape == (12 * factor, 42 * factor, 3)
    first_result = grid[2 * factor:10 * factor, 22 * factor:30 * factor]
    assert np.array_equal(first_result[:, :4 * factor], grid[2 * factor:10 * factor, 2 * factor:6 * factor])
    assert not np.array_equal(first_result[:, 4 * factor:], grid[2 * factor:10 * factor, 6 * factor:10 * factor])
    assert handlers.img2img("runs/tiny", "all", "", picture, 0.5, 4, 0, 3).shape == (12 * factor, 42 * factor, 3)
    strip, gif = handlers.interpolate("models/plain", None, None, None, "0", picture, "", "", 3, 4)
    assert strip.shape == (12 * factor, 32 * factor, 3) and gif.endswith(".gif")


def test_uploads_and_missing_pictures_are_bounded(handlers):
    side = int(LIMITS.upload_pixels ** 0.5) + 1
    huge = np.zeros((side, side, 3), dtype=np.uint8)
    with pytest.raises(DiffkitError, match="upload one of at most"):
        handlers.img2img("runs/tiny", "all", None, huge, 0.5, 4, 0, 1)
    with pytest.raises(DiffkitError, match="The picture to redraw is missing"):
        handlers.img2img("runs/tiny", "all", None, None, 0.5, 4, 0, 1)
    with pytest.raises(DiffkitError, match="neither an index below 64 nor a class name"):
        handlers.explain("runs/tiny", None, "999", 10, 0)


def test_explain_draws_x_t_the_forward_strip_and_the_schedules(handlers):
    picture, caption, strip, curves = handlers.explain("runs/tiny", None, "0", 99, 0)
    assert caption.startswith("t = 99 of 100: alpha_bar = 0.0")
    assert picture.shape == (12 * 12, 12 * 12, 3)
    for path in (strip, curves):
        with open(path, "rb") as file:
            assert file.read(4) == b"\x89PNG"


def test_a_diffkit_error_reaches_the_page_as_gr_error_from_functions_and_generators():
    import gradio as gr

    from diffkit.web.app import in_page

    def fails(value):
        raise DiffkitError("The value is bad; pass a good one.")

    def streams(value):
        yield 1
        raise DiffkitError("The stream broke; start again.")

    with pytest.raises(gr.Error, match="The value is bad; pass a good one."):
        in_page(fails)(1)
    with pytest.raises(gr.Error, match="The stream broke"):
        list(in_page(streams)(1))


def test_a_missing_web_extra_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "gradio" else real(name))
    with pytest.raises(DiffkitError, match=r"pip install 'diffkit\[web\]'"):
        require_gradio()


def test_serve_listens_on_localhost_unless_told_otherwise():
    parser = build_parser()
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    assert parser.parse_args(["serve", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_no_bundle_anywhere_is_one_sentence(tmp_path):
    with pytest.raises(DiffkitError, match="No model to serve"):
        ModelShelf(find_models(root=tmp_path))
    with pytest.raises(DiffkitError, match="is not a bundle"):
        find_models([tmp_path])


def test_serve_without_a_model_says_so_in_one_sentence(diffkit_cli, tmp_path):
    result = diffkit_cli("serve", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("diffkit: error: No model to serve: pass a run directory or bundle, or train "
                                     "one first (make demo).")
    result = diffkit_cli("serve", "--port", "70000", cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "--port must be from 1 to 65535" in result.stderr
