"""Image folders: formats, grey/colour, resize + centre crop, labels, and unreadable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.data import folder, load_dataset
from diffkit.errors import DiffkitError


def make_pictures(root: Path) -> None:
    """A colour PNG, a grey JPEG in a subfolder, a truncated JPEG and a text file named .png."""
    (root / "sub").mkdir(parents=True)
    colour = np.zeros((40, 60, 3), dtype=np.uint8)
    colour[:, :, 0] = 255  # pure red, 60 wide: the centre crop keeps the middle 40 columns
    colour[:, :3, 1] = 255  # a yellow band at the left edge, cropped away
    Image.fromarray(colour).save(root / "red.png")
    Image.fromarray(np.full((30, 30), 90, dtype=np.uint8)).save(root / "sub" / "grey.jpg", quality=95)
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "broken.jpg", quality=90)
    data = (root / "broken.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(data[: len(data) // 2])  # cut mid-scan: truncated
    (root / "notes.png").write_text("this is a text file, not a picture")
    (root / "readme.txt").write_text("not an image extension: ignored")
    (root / ".hidden.png").write_bytes(b"hidden files are ignored")


def test_unreadable_files_are_named_in_the_warning_and_skipped(tmp_path):
    make_pictures(tmp_path / "pictures")
    with pytest.warns(folder.UnreadableImagesWarning) as caught:
        dataset = load_dataset("folder", size=16, data_dir=tmp_path / "cache", path=tmp_path / "pictures")
    message = str(caught[0].message)
    assert "Skipped 2 unreadable" in message and "broken.jpg" in message and "notes.png" in message
    assert len(dataset) == 2 and dataset.images.shape == (2, 3, 16, 16)
    red = dataset.images[0]  # sorted paths: red.png before sub/grey.jpg
    assert red[0].min() == 255 and red[1].max() <= 2 and red[2].max() <= 2  # yellow band cropped off
    assert (dataset.images[1].float() - 90).abs().max() <= 2  # grey expanded to R = G = B
    assert dataset.labels.tolist() == [-1, -1] and dataset.num_classes == 0


def test_strict_stops_and_names_the_files(tmp_path):
    make_pictures(tmp_path / "pictures")
    with pytest.raises(DiffkitError, match=r"2 image file\(s\) in .* cannot be read \(broken.jpg, notes.png\)"):
        load_dataset("folder", data_dir=tmp_path, path=tmp_path / "pictures", strict=True)


def test_strict_from_the_command_line_exits_2(tmp_path, diffkit_cli):
    make_pictures(tmp_path / "pictures")
    out = tmp_path / "grid.png"
    result = diffkit_cli("data", "show", "folder", "--path", str(tmp_path / "pictures"), "--out", str(out),
                         "--size", "16", "--data-dir", str(tmp_path / "cache"), "--strict")
    assert result.returncode == 2 and "broken.jpg" in result.stderr and not out.exists()
    result = diffkit_cli("data", "show", "folder", "--path", str(tmp_path / "pictures"), "--out", str(out),
                         "--size", "16", "--data-dir", str(tmp_path / "cache"))
    assert result.returncode == 0 and "warning" in result.stderr and "notes.png" in result.stderr
    assert Image.open(out).mode == "RGB"


def test_subfolders_become_classes_and_all_grey_folders_stay_one_channel(tmp_path):
    for name, value in [("cats", 10), ("dogs", 200), ("cats", 30)]:
        (tmp_path / "pets" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 20), value, dtype=np.uint8)).save(tmp_path / "pets" / name / f"{value}.png")
    dataset = load_dataset("folder", size=8, data_dir=tmp_path, path=tmp_path / "pets")
    assert dataset.class_names == ["cats", "dogs"] and dataset.labels.tolist() == [0, 0, 1]
    assert dataset.channels == 1 and dataset.images[:, 0, 0, 0].tolist() == [10, 30, 200]
    colour = load_dataset("folder", size=8, data_dir=tmp_path, path=tmp_path / "pets", channels=3)
    assert colour.channels == 3 and torch.equal(colour.images[:, :1].expand(-1, 3, -1, -1), colour.images)


def test_transparent_pixels_become_white_and_channels_1_uses_luma(tmp_path):
    (tmp_path / "icons").mkdir()
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[:, :5] = (0, 0, 255, 255)  # opaque blue left half, transparent right half
    Image.fromarray(rgba).save(tmp_path / "icons" / "icon.png")
    dataset = load_dataset("folder", size=10, data_dir=tmp_path, path=tmp_path / "icons")
    assert dataset.images[0, :, 5, 9].tolist() == [255, 255, 255]
    assert dataset.images[0, :, 5, 0].tolist() == [0, 0, 255]
    grey = load_dataset("folder", size=10, data_dir=tmp_path, path=tmp_path / "icons", channels=1)
    assert grey.images[0, 0, 5, 0].item() == round(0.114 * 255)


def test_cache_is_reused_and_the_warning_repeats(tmp_path, monkeypatch):
    make_pictures(tmp_path / "pictures")
    with pytest.warns(folder.UnreadableImagesWarning):
        load_dataset("folder", size=16, data_dir=tmp_path, path=tmp_path / "pictures")
    monkeypatch.setattr(folder, "read_picture", lambda *a: pytest.fail("the cache should have been used"))
    with pytest.warns(folder.UnreadableImagesWarning, match="broken.jpg"):
        again = load_dataset("folder", size=16, data_dir=tmp_path, path=tmp_path / "pictures")
    assert again.from_cache and len(again) == 2


def test_bad_folders_are_one_sentence_errors(tmp_path):
    with pytest.raises(DiffkitError, match="needs the folder"):
        load_dataset("folder", data_dir=tmp_path)
    with pytest.raises(DiffkitError, match="does not exist"):
        load_dataset("folder", data_dir=tmp_path, path=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffkitError, match="holds no image files"):
        load_dataset("folder", data_dir=tmp_path, path=tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_text("text")
    with pytest.raises(DiffkitError, match="None of the 1 image files"):
        load_dataset("folder", data_dir=tmp_path, path=tmp_path / "junk")
