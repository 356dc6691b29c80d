"""`diffkit data glyphs|list|show`: render the glyph set, list what is available, preview a dataset."""

from __future__ import annotations

import argparse
import time

from diffkit.errors import warnings_as_lines


def add_parser(subparsers) -> None:
    """Register `diffkit data` and its three subcommands."""
    parser = subparsers.add_parser("data", help="prepare, list and preview datasets")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: parser.print_help() or 0)

    glyphs = actions.add_parser("glyphs", help="render Chinese characters from a CJK font into the cache")
    _add_glyph_options(glyphs)
    glyphs.add_argument("--preview", metavar="PNG", help="also save a grid of 256 glyphs spread over the set")
    _add_common(glyphs)
    glyphs.set_defaults(func=run_glyphs)

    listing = actions.add_parser("list", help="show which datasets are available on this machine")
    listing.add_argument("--data-dir", default=None,
                         help="cache directory (default $DIFFKIT_DATA or ~/.cache/diffkit)")
    listing.set_defaults(func=run_list)

    show = actions.add_parser("show", help="save a grid picture of a dataset's images")
    show.add_argument("name", help="dataset name (see `diffkit data list`)")
    show.add_argument("--out", required=True, metavar="PNG", help="where to write the grid picture")
    show.add_argument("--count", type=int, default=64, help="how many images to show (default 64)")
    show.add_argument("--nrow", type=int, default=None, help="images per row (default: a square grid)")
    show.add_argument("--seed", type=int, default=None,
                      help="pick images at random with this seed (default: evenly spaced)")
    show.add_argument("--split", default="train", help="train or test (default train)")
    show.add_argument("--path", help="folder dataset: the folder of pictures")
    show.add_argument("--source", help="fashion_mnist/mnist/cifar10: the folder holding the original files")
    show.add_argument("--strict", action="store_true", help="folder dataset: stop on an unreadable file")
    show.add_argument("--download", action="store_true", help="cifar10: download when missing (needs network)")
    _add_glyph_options(show, defaults_only=True)
    _add_common(show)
    show.set_defaults(func=run_show)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options every data subcommand shares."""
    parser.add_argument("--data-dir", default=None,
                        help="cache directory (default $DIFFKIT_DATA or ~/.cache/diffkit)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the dataset's)")
    parser.add_argument("--force", action="store_true", help="rebuild the cache even if it exists")


def _add_glyph_options(parser: argparse.ArgumentParser, defaults_only: bool = False) -> None:
    """Glyph rendering options (for `show glyphs`, only the ones that choose which cache to read)."""
    parser.add_argument("--font", action="append", default=None,
                        help="font file (.ttf/.otf/.ttc), default Noto Sans SC; repeat for one style per font")
    parser.add_argument("--chars", default="main",
                        help="main (U+4E00-U+9FFF), common (has a meaning), a string, or a UTF-8 file")
    parser.add_argument("--variation", action="append", default=None,
                        help="named instance of a variable font (default Regular); repeat for several styles")
    if defaults_only:
        return
    parser.add_argument("--face", type=int, default=None, help="face index inside a .ttc collection")
    parser.add_argument("--margin", type=int, default=None, help="empty pixels around the em square")
    parser.add_argument("--missing", choices=("skip", "error"), default="skip",
                        help="characters the font lacks: skip and count them, or stop")
    parser.add_argument("--meanings", choices=("auto", "unihan", "cedict", "none"), default="auto",
                        help="where English meanings come from (default: Unihan, else CC-CEDICT)")


def run_glyphs(args: argparse.Namespace) -> int:
    """Render (or reuse) the glyph dataset and report what was rendered and skipped."""
    from diffkit.data import load_dataset
    from diffkit.data.glyphs import skipped_count

    start = time.perf_counter()
    dataset = load_dataset("glyphs", size=args.size, split="all", data_dir=args.data_dir, font=args.font,
                           face=args.face,
                           variation=args.variation or "Regular", chars=args.chars, margin=args.margin,
                           missing=args.missing, meanings=args.meanings, force=args.force)
    seconds = time.perf_counter() - start
    info = dataset.info
    how = "read from cache" if dataset.from_cache else "rendered"
    print(f"{len(dataset)} glyphs {dataset.size}x{dataset.size} from {info['font_name']} {how} in {seconds:.1f} s "
          f"({info['requested']} characters requested, {skipped_count(dataset)} skipped)")
    for reason, characters in info.get("skipped", {}).items():
        print(f"  skipped {len(characters)} ({reason}): {characters[:40]}{'...' if len(characters) > 40 else ''}")
    if info.get("clipped"):
        print(f"  clipped {len(info['clipped'])} glyphs larger than the image: {info['clipped'][:40]}")
    known = sum(1 for meaning in dataset.meanings or [] if meaning)
    print(f"  meanings: {known} of {dataset.num_classes} characters from {info['meaning_source']}")
    _print_caption_coverage(dataset)
    print(f"  cache: {info['cache_path']}")
    if args.preview:
        _save_preview(dataset, args.preview, count=256, nrow=None, seed=None)
        print(f"  preview: {args.preview}")
    return 0


def _print_caption_coverage(dataset) -> None:
    """How many glyphs have a plain-English caption and a radical, and the size of the held-out split."""
    from diffkit.data.captions import glyph_metadata

    coverage = glyph_metadata(dataset.class_names, dataset.meanings).coverage()
    print(f"  captions (cleaned meanings): {coverage['with_meaning']} of {coverage['characters']}; "
          f"radicals: {coverage['with_radical']}; held out (split test, main/common sets only): "
          f"{coverage['held_out']}")


def run_list(args: argparse.Namespace) -> int:
    """Print each dataset, whether it is available here, and its cached files."""
    from diffkit.data import DATASETS, available_datasets
    from diffkit.data.dataset import resolve_data_dir

    directory = resolve_data_dir(args.data_dir)
    print(f"data directory: {directory}")
    for name, available, detail in available_datasets(directory):
        print(f"{name:14s} {'available' if available else 'missing':9s}  {DATASETS[name].about}")
        print(f"{'':14s} {'':9s}  {detail}")
        for cached in sorted((directory / name).glob("*.npz")):
            print(f"{'':14s} {'':9s}  cached: {cached.name} ({cached.stat().st_size / 1e6:.1f} MB)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Load a dataset and save a grid of its images."""
    from diffkit.data import dataset_options, load_dataset

    wanted = {"path": args.path, "source": args.source, "strict": args.strict, "download": args.download,
              "font": args.font, "variation": args.variation, "chars": args.chars, "force": args.force}
    accepted = set(dataset_options(args.name)) if args.name in _known_names() else set()
    options = {key: value for key, value in wanted.items() if key in accepted and value not in (None, False)}
    if args.name == "glyphs" and options.get("chars") == "main":
        options.pop("chars")
    with warnings_as_lines():
        dataset = load_dataset(args.name, size=args.size, split=args.split, data_dir=args.data_dir, **options)
    _save_preview(dataset, args.out, count=args.count, nrow=args.nrow, seed=args.seed)
    print(f"{dataset!r}: saved {min(args.count, len(dataset))} images to {args.out}")
    return 0


def _known_names() -> set[str]:
    """Dataset names, so an unknown one reaches load_dataset and gets its one-sentence error."""
    from diffkit.data import DATASETS

    return set(DATASETS)


def _save_preview(dataset, out: str, count: int, nrow: int | None, seed: int | None) -> None:
    """Save `count` images spread evenly over the dataset (or drawn at random with `seed`)."""
    import torch

    from diffkit.errors import DiffkitError
    from diffkit.images import save_grid, to_model_range

    if count < 1:
        raise DiffkitError(f"--count must be at least 1, got {count}.")
    count = min(count, len(dataset))
    if seed is None:
        indices = torch.linspace(0, len(dataset) - 1, count).round().long()
    else:
        generator = torch.Generator().manual_seed(seed)
        indices = torch.randperm(len(dataset), generator=generator)[:count]
    save_grid(to_model_range(dataset.images[indices]), out, nrow=nrow)
