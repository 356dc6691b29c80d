"""Glyph captions and metadata: cleaning to plain English, radicals and strokes from Unihan, the held-out split."""

from __future__ import annotations

import hashlib

import pytest
import torch

from diffkit.data.captions import caption_meanings, clean_meaning, glyph_metadata, irg_sources_path, is_held_out
from diffkit.data.dataset import ImageDataset
from diffkit.data.glyphs import MAIN_BLOCK, select_split


@pytest.mark.parametrize("raw, clean", [
    ("water, liquid, lotion, juice", "water, liquid, lotion, juice"),
    ("(same as 屑) chips; crumbs; bits", "chips; crumbs; bits"),
    ("(non-classical of 會) to meet; to assemble", "to meet; to assemble"),
    ("old variant of 帽[mao4]/hat/cap", "hat; cap"),  # CC-CEDICT: pinyin and the dangling reference go
    ("variant of 窗[chuang1]", ""),
    ("same as U+5B57 字", ""),
    ("(Cant.) a place", "a place"),
    ("surname Yi/abbr. for 伊朗[Yi1 lang3], Iran", "surname Yi; abbr. for Iran"),
    ("numeral 8 in Suzhou numeral system 蘇州碼子|苏州码子[Su1 zhou1 ma3 zi5]", "numeral 8 in Suzhou numeral system"),
])
def test_meanings_are_cleaned_to_plain_english(raw, clean):
    assert clean_meaning(raw) == clean


def test_held_out_rule_is_the_documented_hash_and_about_five_percent():
    block = [chr(code) for code in range(MAIN_BLOCK[0], MAIN_BLOCK[1] + 1)]
    flags = [is_held_out(character) for character in block]
    for character, flag in zip(block[:200], flags):  # the rule, written out independently
        digest = hashlib.sha256(f"U+{ord(character):04X}".encode()).digest()
        assert flag == (int.from_bytes(digest[:4], "big") % 100 < 5)
    assert 0.04 < sum(flags) / len(block) < 0.06


@pytest.mark.skipif(irg_sources_path() is None, reason="Debian unicode-data (Unihan) is not installed")
def test_radicals_and_strokes_come_from_unihan():
    metadata = glyph_metadata(["水", "火", "国", "\ue000"], ["water", "fire", "", ""])
    assert metadata.radicals.tolist() == [85, 86, 31, 0]  # kRSUnicode; a private-use point has none
    assert metadata.strokes.tolist() == [4, 4, 8, 0]
    assert metadata.coverage() == {"characters": 4, "with_meaning": 2, "with_radical": 3,
                                   "held_out": sum(is_held_out(c) for c in "水火国\ue000")}


def test_train_and_test_splits_partition_the_characters_and_keep_labels():
    characters = [chr(code) for code in range(0x4E00, 0x4E00 + 250)]
    images = torch.arange(250, dtype=torch.uint8).view(250, 1, 1, 1).expand(250, 1, 2, 2).contiguous()
    dataset = ImageDataset(images, torch.arange(250), characters, name="glyphs")
    train, test = select_split(dataset, "train"), select_split(dataset, "test")
    assert len(train) + len(test) == 250 and len(test) > 0
    assert set(train.labels.tolist()).isdisjoint(test.labels.tolist())
    assert all(is_held_out(characters[label]) for label in test.labels.tolist())
    assert torch.equal(test.images[:, 0, 0, 0].long(), test.labels)  # each image keeps its own label
    assert train.class_names == characters  # labels index the full character list in every split


def test_a_meaning_that_only_names_another_character_takes_that_characters_meaning():
    captions = caption_meanings(["囱", "窗", "冃"], ["variant of 窗[chuang1]", "window", "old variant of 帽[mao4]"])
    assert captions == ["window", "window", ""]  # 帽 is not in the list: nothing to borrow
