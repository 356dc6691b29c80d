"""Glyph rendering from the real Noto Sans SC font: coverage, centring, one scale, determinism, cache."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit.data import glyphs, load_dataset
from diffkit.data.glyphs import find_default_font, open_font, render_glyphs, render_ink
from diffkit.errors import DiffkitError

# A spread of shapes: flat, tall, small, dense, and ordinary characters from across the block.
SAMPLE = "".join(dict.fromkeys("一丨口国亅乙人大龍鬱瓜水火山川日月田目" + "".join(map(chr, range(0x4E00, 0x9FA0, 613)))))
LACKED = "\u9ff0\ue000"  # not in Noto Sans SC: the last code points of the block, a private-use one


@pytest.fixture(scope="module")
def font():
    return find_default_font()


def ink_box(image: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) exclusive bounds of the non-zero pixels."""
    rows = np.flatnonzero(image.any(axis=1))
    columns = np.flatnonzero(image.any(axis=0))
    return rows[0], rows[-1] + 1, columns[0], columns[-1] + 1


def test_default_font_is_noto_sans_sc_regular(font):
    family, style = open_font(font, 16).getname()
    assert family.startswith("Noto Sans") and "SC" in family
    assert style == "Regular"


@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_glyph_is_centred_on_its_ink_box_within_a_pixel(font, size):
    rendered = render_glyphs(list(SAMPLE), font, size, margin=max(1, round(size / 16)))
    assert rendered.characters == list(SAMPLE) and rendered.images.shape == (len(SAMPLE), size, size)
    for image in rendered.images:
        top, bottom, left, right = ink_box(image)
        assert abs(left - (size - right)) <= 1  # equal empty columns on both sides, up to one pixel
        assert abs(top - (size - bottom)) <= 1


def test_centring_keeps_the_exact_freetype_pixels(font):
    """The placed glyph is the font's own rendering, shifted: no pixel lost, no resampling."""
    rendered = render_glyphs(list(SAMPLE[:20]), font, 32, margin=2)
    reference = open_font(font, 28)
    for character, image in zip(rendered.characters, rendered.images):
        top, bottom, left, right = ink_box(image)
        np.testing.assert_array_equal(image[top:bottom, left:right], render_ink(reference, character))


def test_one_scale_for_all_glyphs_keeps_relative_sizes(font):
    """Every ink box is the 10x-larger render's box divided by 10: no glyph is scaled on its own."""
    rendered = render_glyphs(list(SAMPLE), font, 32, margin=2)  # em = 28 px
    large = open_font(font, 280)
    heights = []
    for character, image in zip(rendered.characters, rendered.images):
        top, bottom, left, right = ink_box(image)
        big = render_ink(large, character).shape
        # Antialiasing may add a faint pixel on each side of a box, hence 2 px of slack.
        assert abs((bottom - top) - big[0] / 10) <= 2
        assert abs((right - left) - big[1] / 10) <= 2
        heights.append(bottom - top)
    assert heights[0] <= 4 and heights[SAMPLE.index("国")] >= 24  # 一 stays flat, 国 fills the em
    assert heights[SAMPLE.index("口")] < heights[SAMPLE.index("国")]


def test_characters_the_font_lacks_are_skipped_and_counted(font):
    rendered = render_glyphs(["一", *LACKED, " ", "二"], font, 32, margin=2)
    assert rendered.characters == ["一", "二"]
    assert rendered.skipped == {"not in the font's cmap": list(LACKED), "renders blank": [" "]}
    assert len(rendered.images) == 2 and all(image.max() > 0 for image in rendered.images)


def test_without_a_cmap_missing_characters_are_caught_as_notdef_renders(font, monkeypatch):
    monkeypatch.setattr(glyphs, "font_codepoints", lambda choice: None)  # as if fontTools were absent
    rendered = render_glyphs(["一", *LACKED, "二"], font, 32, margin=2)
    assert rendered.characters == ["一", "二"]
    assert rendered.skipped == {"renders as .notdef": list(LACKED)}


def test_dataset_labels_meanings_and_skip_count(tmp_path):
    dataset = load_dataset("glyphs", data_dir=tmp_path, chars="一二水" + LACKED)
    assert dataset.class_names == ["一", "二", "水"]
    assert dataset.labels.tolist() == [0, 1, 2] and dataset.num_classes == 3
    assert glyphs.skipped_count(dataset) == 2 and dataset.info["requested"] == 5
    assert dataset.meanings is not None and "one" in dataset.meanings[0]
    assert "water" in dataset.meanings[2]
    image, label = dataset[2]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and label == 2
    assert image.min() == -1.0 and image.max() == 1.0


def test_missing_error_refuses_and_names_the_characters(tmp_path):
    with pytest.raises(DiffkitError, match="lacks 2 of the requested characters"):
        load_dataset("glyphs", data_dir=tmp_path, chars="一" + LACKED, missing="error")


def test_characters_from_a_text_file_in_first_seen_order(tmp_path):
    listing = tmp_path / "chars.txt"
    listing.write_text("水 火\n水山\n", encoding="utf-8")
    dataset = load_dataset("glyphs", data_dir=tmp_path, chars=str(listing), size=64)
    assert dataset.class_names == ["水", "火", "山"] and dataset.images.shape == (3, 1, 64, 64)


def test_common_set_is_the_block_characters_with_a_meaning():
    meanings = {"一": "one", "水": "water", "a": "not in the block", "火": ""}
    assert glyphs.resolve_characters("common", meanings) == ["一", "水"]
    assert len(glyphs.resolve_characters("main", {})) == 0x9FFF - 0x4E00 + 1


def test_same_inputs_give_the_same_bytes(font, tmp_path):
    first = render_glyphs(list(SAMPLE), font, 32, margin=2)
    second = render_glyphs(list(SAMPLE), font, 32, margin=2)
    assert first.images.tobytes() == second.images.tobytes()
    a = load_dataset("glyphs", data_dir=tmp_path / "a", chars=SAMPLE)
    b = load_dataset("glyphs", data_dir=tmp_path / "b", chars=SAMPLE)
    assert filecmp.cmp(a.info["cache_path"], b.info["cache_path"], shallow=False)


def test_second_load_reads_the_cache_without_rendering(tmp_path, monkeypatch):
    calls = []
    real_render = glyphs.render_glyphs
    monkeypatch.setattr(glyphs, "render_glyphs", lambda *args: calls.append(args) or real_render(*args))
    first = load_dataset("glyphs", data_dir=tmp_path, chars=SAMPLE)
    cache = Path(first.info["cache_path"])
    stamp = cache.stat().st_mtime_ns
    second = load_dataset("glyphs", data_dir=tmp_path, chars=SAMPLE)
    assert len(calls) == 1 and not first.from_cache and second.from_cache
    assert cache.stat().st_mtime_ns == stamp
    assert torch.equal(first.images, second.images) and second.class_names == first.class_names
    with np.load(cache, allow_pickle=False) as archive:
        assert archive["images"].dtype == np.uint8 and archive["images"].shape == (len(SAMPLE), 1, 32, 32)
    load_dataset("glyphs", data_dir=tmp_path, chars=SAMPLE, margin=3)  # a different recipe renders again
    load_dataset("glyphs", data_dir=tmp_path, chars=SAMPLE, force=True)
    assert len(calls) == 3


def test_no_font_installed_says_how_to_get_one(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "justmytype_intl_cjk" else real_find_spec(name, *a))
    monkeypatch.setattr(glyphs, "DEBIAN_CJK_FONTS", ())
    with pytest.raises(DiffkitError, match="--font PATH"):
        find_default_font()


def test_bad_font_options_are_one_sentence_errors(tmp_path):
    with pytest.raises(DiffkitError, match="does not exist"):
        load_dataset("glyphs", data_dir=tmp_path, font=tmp_path / "missing.ttf")
    with pytest.raises(DiffkitError, match="no 'Heavy' instance; choose one of: Thin"):
        load_dataset("glyphs", data_dir=tmp_path, chars="一", variation="Heavy")
    with pytest.raises(DiffkitError, match="no split 'validation'"):
        load_dataset("glyphs", data_dir=tmp_path, split="validation")
    with pytest.raises(DiffkitError, match="Only the main and common character sets have a held-out test split"):
        load_dataset("glyphs", data_dir=tmp_path, chars="一", split="test")


def test_several_styles_draw_every_character_once_per_style(font, tmp_path):
    dataset = load_dataset("glyphs", data_dir=tmp_path, chars="水火山" + LACKED, variation=["Light", "Bold"],
                           font=[font.path])
    assert dataset.info["style_names"] == ["Noto Sans SC Light", "Noto Sans SC Bold"]
    assert dataset.labels.tolist() == [0, 1, 2, 0, 1, 2] and dataset.styles.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.class_names == ["水", "火", "山"] and glyphs.skipped_count(dataset) == 2
    light, bold = dataset.images[:3].float(), dataset.images[3:].float()
    assert bool((bold.sum(dim=(1, 2, 3)) > 1.3 * light.sum(dim=(1, 2, 3))).all())  # bold strokes carry more ink
    alone = render_glyphs(["水", "火", "山"], glyphs.FontChoice(font.path, font.face, "Bold"), 32, margin=2)
    np.testing.assert_array_equal(dataset.images[3:, 0].numpy(), alone.images)
    again = load_dataset("glyphs", data_dir=tmp_path, chars="水火山" + LACKED, variation=["Light", "Bold"],
                         font=[font.path])
    assert again.from_cache and torch.equal(again.styles, dataset.styles)


def write_cjk_collection(path: Path, text: str) -> Path:
    """A small .ttc shaped like Debian's NotoSansCJK-Regular.ttc: static Regular JP and SC faces."""
    from fontTools import subset
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.ttCollection import TTCollection
    from fontTools.varLib.instancer import instantiateVariableFont

    pip_font = find_default_font().path  # .../notosanssc/NotoSansSC[wght].ttf
    collection = TTCollection()
    for region, source in [("JP", next(pip_font.parents[1].glob("notosansjp/*.ttf"))), ("SC", pip_font)]:
        font = TTFont(source)
        subsetter = subset.Subsetter()
        subsetter.populate(text=text)
        subsetter.subset(font)
        font = instantiateVariableFont(font, {"wght": 400})
        for record in font["name"].names:
            if record.nameID in (1, 16):
                record.string = f"Noto Sans CJK {region}"
        collection.fonts.append(font)
    collection.save(path)
    return path


def test_debian_collection_fallback_picks_the_simplified_chinese_face(monkeypatch, tmp_path):
    """Without the PyPI font, the "Noto Sans CJK SC" face is found inside a .ttc by its family name."""
    collection = write_cjk_collection(tmp_path / "NotoSansCJK-Regular.ttc", "水火")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "justmytype_intl_cjk" else real_find_spec(name, *a))
    monkeypatch.setattr(glyphs, "DEBIAN_CJK_FONTS", (tmp_path / "absent.ttc", collection))
    choice = find_default_font()
    assert choice.path == collection and choice.face == 1
    rendered = render_glyphs(["水", "火", "山"], choice, 32, margin=2)
    assert rendered.characters == ["水", "火"] and rendered.skipped == {"not in the font's cmap": ["山"]}
