"""Captions and metadata of the glyphs: a plain-English meaning, the Kangxi radical, the stroke count, and the
fixed held-out split of characters that no training run sees.

Meanings come from `meanings.py` (Unihan kDefinition, else CC-CEDICT) and are cleaned to plain English here:
CJK characters, `U+XXXX` references (and the parentheticals holding them), CC-CEDICT's bracketed pinyin and
dangling "variant of" glosses are dropped; a meaning that was only such a reference takes the meaning of the
character it names. The radical and total strokes are Unihan's kRSUnicode and
kTotalStrokes (Debian `unicode-data`, Unihan_IRGSources.txt).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from diffkit.data.meanings import read_unihan_fields

IRG_SOURCES_CANDIDATES = (
    Path("/usr/share/unicode/Unihan_IRGSources.txt.bz2"),
    Path("/usr/share/unicode/Unihan_IRGSources.txt"),
)
HELD_OUT_PERCENT = 5  # characters whose code-point hash falls in the first 5 of 100 buckets are held out
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
_CODE_REFERENCE = r"U\+[0-9A-Fa-f]{4,6}"
_REFERENCE_PARENTHETICAL = re.compile(rf"\([^()]*(?:[{_CJK}]|{_CODE_REFERENCE})[^()]*\)")
_PINYIN = re.compile(r"\[[^\]]*\]")  # CC-CEDICT writes readings as 帽[mao4]
_REFERENCE = re.compile(rf"[{_CJK}]+(?:\|[{_CJK}]+)*|{_CODE_REFERENCE}")
_DIALECT_TAG = re.compile(r"\((?:Cant|Jpn|Korean)\.?\)")
_DANGLING = re.compile(r"\b(?:of|see|as|from|for|same as|variant|form)\s*$", re.IGNORECASE)


def clean_meaning(text: str) -> str:
    """A dictionary definition as plain English: no CJK characters, code points, pinyin or dangling references."""
    text = _REFERENCE_PARENTHETICAL.sub(" ", text)
    text = _PINYIN.sub(" ", _DIALECT_TAG.sub(" ", text))
    text = _REFERENCE.sub(" ", text)
    glosses = []
    for gloss in re.split(r"[;/]", text):  # Unihan separates senses with ';', CC-CEDICT with '/'
        gloss = re.sub(r"\(\s*\)", " ", gloss)
        gloss = re.sub(r"\s+", " ", gloss).strip(" ,.:-")
        gloss = re.sub(r"\s+([,.;:])", r"\1", gloss)
        gloss = re.sub(r"\b(of|for|as),\s*", r"\1 ", gloss)  # "abbr. for 伊朗, Iran" -> "abbr. for Iran"
        if gloss and not _DANGLING.search(gloss) and re.search("[A-Za-z]", gloss):
            glosses.append(gloss)
    return "; ".join(dict.fromkeys(glosses))


def caption_meanings(characters: list[str], meanings: list[str]) -> list[str]:
    """Cleaned meanings of the characters; one that is only a reference ("variant of 窗") takes the cleaned meaning
    of the first character it names, when that character is in the list (one level, no chains)."""
    raw = dict(zip(characters, meanings))
    captions = []
    for meaning in meanings:
        caption = clean_meaning(meaning)
        if not caption:
            named = re.search(f"[{_CJK}]", meaning)
            caption = clean_meaning(raw.get(named.group(), "")) if named else ""
        captions.append(caption)
    return captions


def irg_sources_path() -> Path | None:
    """Unihan_IRGSources.txt(.bz2) from Debian `unicode-data`, or None."""
    return next((path for path in IRG_SOURCES_CANDIDATES if path.is_file()), None)


@functools.lru_cache(maxsize=2)
def read_radicals_and_strokes(path: str) -> dict[str, tuple[int, int]]:
    """Character -> (Kangxi radical 1..214, total strokes) from kRSUnicode and kTotalStrokes (first values)."""
    fields = read_unihan_fields(Path(path), ("kRSUnicode", "kTotalStrokes"))
    strokes = fields["kTotalStrokes"]
    # kRSUnicode reads "85.0" (radical.residual strokes); 85'.3 marks a simplified radical form; several may follow.
    return {character: (int(value.split()[0].split(".")[0].rstrip("'")),
                        int(strokes[character].split()[0]) if character in strokes else 0)
            for character, value in fields["kRSUnicode"].items()}


def is_held_out(character: str) -> bool:
    """The fixed held-out rule: SHA-256 of "U+XXXX" (upper-case hex), first 4 bytes big-endian, mod 100 < 5."""
    digest = hashlib.sha256(f"U+{ord(character):04X}".encode("ascii")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


@dataclass(frozen=True)
class GlyphMetadata:
    """Per character of a glyph set: cleaned caption ('' if none), radical (0 if unknown), strokes, held out."""

    characters: list[str]
    captions: list[str]
    radicals: torch.Tensor  # (N,) int64, Kangxi radical 1..214, 0 when Unihan has none
    strokes: torch.Tensor  # (N,) int64, 0 when unknown
    held_out: torch.Tensor  # (N,) bool

    def coverage(self) -> dict[str, int]:
        """How many characters have a caption, a radical, and how many are held out."""
        return {"characters": len(self.characters), "with_meaning": sum(1 for c in self.captions if c),
                "with_radical": int((self.radicals > 0).sum()), "held_out": int(self.held_out.sum())}


def glyph_metadata(characters: list[str], meanings: list[str] | None) -> GlyphMetadata:
    """Captions (cleaned meanings), radicals, strokes and the held-out flags of a list of characters."""
    path = irg_sources_path()
    table = read_radicals_and_strokes(str(path)) if path is not None else {}
    captions = caption_meanings(characters, meanings) if meanings else [""] * len(characters)
    pairs = [table.get(character, (0, 0)) for character in characters]
    return GlyphMetadata(
        characters=list(characters), captions=captions,
        radicals=torch.tensor([radical for radical, _ in pairs], dtype=torch.int64),
        strokes=torch.tensor([count for _, count in pairs], dtype=torch.int64),
        held_out=torch.tensor([is_held_out(character) for character in characters], dtype=torch.bool),
    )
