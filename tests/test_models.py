"""The models shipped in models/ load on a fresh clone (fp16 bundles) and draw glyph-like images at once."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from diffkit.bundle import load
from diffkit.data import load_dataset
from diffkit.evaluate.glyph_shape import GlyphRange
from diffkit.export import COMMAND_FILE
from diffkit.images import to_uint8

MODELS = Path(__file__).resolve().parents[1] / "models"
GLYPH_LIKE_AT_LEAST = 4  # of 16 (the shipped model draws 5, see README): ink and grey inside the real 1st-99th pct.
# 400 CJK ideographs spread over the whole URO block (U+4E00..U+9FA5): the real glyphs' range of ink and grey.
REFERENCE_CHARACTERS = "".join(chr(0x4E00 + offset) for offset in range(0, 20_900, 52))


@pytest.fixture(scope="module")
def glyph_range(tmp_path_factory) -> GlyphRange:
    real = load_dataset("glyphs", size=32, data_dir=tmp_path_factory.mktemp("glyphs"), chars=REFERENCE_CHARACTERS)
    assert len(real.images) >= 300
    return GlyphRange.of(real.images)


def check_shipped(name: str) -> Path:
    """The bundle's files are there, its weights fp16, and it stays within the ~10 MB a model in git may take."""
    path = MODELS / name
    assert {"config.json", "model.safetensors", COMMAND_FILE} <= {item.name for item in path.iterdir()}
    assert (path / "model.safetensors").stat().st_size < 10.5e6
    with safe_open(str(path / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.float16}
    return path


def test_the_text_model_draws_glyphs_for_a_meaning(glyph_range):
    bundle = load(check_shipped("glyphs32-text"))
    samples = to_uint8(bundle.sample(16, prompts=["water"], guidance=5.0, sampler="dpmpp_2m", steps=20, seed=0))
    assert samples.shape == (16, 1, 32, 32)
    # Noise, blank canvases, blobs and grey boxes are not glyph-like (test_glyph_shape); the share is in the README.
    assert glyph_range.contains(samples).sum() >= GLYPH_LIKE_AT_LEAST
