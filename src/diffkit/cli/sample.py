"""`diffkit sample`: a bundle -> `Bundle.sample_steps` (or `Bundle.guidance_sweep`) -> a PNG grid, an `.npz` of
uint8 images and labels (what `diffkit eval --fake` reads) or a folder of PNGs; optionally a GIF/MP4 of the steps."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffkit.animation import ANIMATION_SUFFIXES
from diffkit.cli.arguments import (add_prompt, add_quiet, add_spacing, add_speed, finite_float, output_file,
                                   scale_list)
from diffkit.errors import DiffkitError
from diffkit.images import PICTURE_SUFFIXES

SET_SUFFIXES = (".npz",)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit sample`."""
    parser = subparsers.add_parser(
        "sample", help="draw samples from a trained run or bundle into a grid, an .npz or a folder",
        description="Sample from RUN (a directory with config.json + model.safetensors) and save a PNG grid, "
                    "an .npz of uint8 images and labels, or a folder of PNGs (--out DIR/).",
    )
    parser.add_argument("run", metavar="RUN", help="run directory or bundle")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the run's sample.sampler)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    add_spacing(parser, "a grid fitted for the sampler and step count if the run has one, else the run's spacing "
                        "with its own sampler, else the sampler's recommended one", fitted=True)
    parser.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--label", type=int, default=None,
                        help="class to draw (class-conditional models; default: cycle through the classes; "
                             "-1: unconditional)")
    parser.add_argument("--out", default="samples.png",
                        type=output_file((*PICTURE_SUFFIXES, *SET_SUFFIXES), directory=True),
                        help="a grid picture (.png, .jpg), an .npz of uint8 images + labels, or a folder DIR/ "
                             "of PNGs (default samples.png)")
    add_prompt(parser, "the meaning to draw (all --n images)")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="text models: one prompt per line; one grid row of --n images per prompt")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    parser.add_argument("--gif", metavar="PATH", default=None, type=output_file(ANIMATION_SUFFIXES),
                        help="also write the denoising trajectory as a .gif or .mp4")
    parser.add_argument("--guidance", type=finite_float, default=1.0,
                        help="classifier-free guidance scale: 1 plain conditional, 0 unconditional (default 1)")
    parser.add_argument("--guidance-sweep", metavar="SCALES", default=None, type=scale_list,
                        help="comma-separated scales, e.g. 0,1,2,4: one grid row of --n images per scale in --out")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_speed(parser)
    add_quiet(parser)
    parser.set_defaults(func=run)


def is_folder(out: str) -> bool:
    """True when --out names a folder of PNGs (ends in '/' or is an existing folder)."""
    return out.endswith(("/", "\\")) or Path(out).is_dir()


def check_folder(out: str) -> None:
    """Refuse a folder that already holds files: writing numbered PNGs into it could replace a user's pictures."""
    folder = Path(out)
    if folder.is_dir() and any(folder.iterdir()):
        raise DiffkitError(f"The folder {folder} is not empty; pass a new or empty folder for the samples.")


def write_samples(images, labels, out: str, nrow: int | None) -> str:
    """Write finished samples (N, C, H, W) in [-1, 1] as a folder of PNGs, an .npz, or a grid picture."""
    from diffkit.evaluate.image_sets import save_image_set
    from diffkit.images import save_grid, to_uint8

    if is_folder(out) or Path(out).suffix.lower() in SET_SUFFIXES:
        return str(save_image_set(out, to_uint8(images), None if labels is None else labels.cpu()))
    return str(save_grid(images, out, nrow=nrow))


def run(args: argparse.Namespace) -> int:
    """Load the bundle, run the sampler behind a progress bar, write the files."""
    from diffkit.animation import save_trajectory_gif
    from diffkit.bundle import load
    from diffkit.progress import run_steps

    if is_folder(args.out):
        check_folder(args.out)  # before minutes of sampling, not after
    bundle = load(args.run, device=args.device, precision=args.precision, channels_last=args.channels_last,
                  compile=args.compile)
    prompts, n, nrow = sample_prompts(args)
    # Resolved here for the progress bar; the bundle applies its spacing rule (and a fitted grid) to args.spacing.
    sampler, steps, *_ = bundle.settings(args.sampler, args.steps, args.spacing)
    if args.guidance_sweep:
        if args.gif:
            raise DiffkitError("--gif shows one sampling run; drop it with --guidance-sweep.")
        images = bundle.guidance_sweep(args.guidance_sweep, n, sampler=sampler, steps=steps, spacing=args.spacing,
                                       seed=args.seed, label=args.label, prompts=prompts)
        labels = None if prompts else class_labels(bundle, bundle.labels_for(n, args.label))
        labels = None if labels is None else labels.repeat(len(args.guidance_sweep))
        print(f"wrote {write_samples(images, labels, args.out, args.nrow or n)}")
        return 0
    labels = bundle.labels_for(n, args.label, prompts=prompts)
    trajectory = run_steps(bundle.sample_steps(n, sampler=sampler, steps=steps, spacing=args.spacing,
                                               seed=args.seed, labels=labels, guidance=args.guidance),
                           total=steps + 1, keep_all=bool(args.gif))  # every step is kept only for the GIF
    args.nrow = args.nrow or nrow
    print(f"wrote {write_samples(trajectory[-1].x_t, class_labels(bundle, labels), args.out, args.nrow)}")
    if args.gif:
        print(f"wrote {save_trajectory_gif(trajectory, args.gif, nrow=args.nrow)}")
    return 0


def sample_prompts(args: argparse.Namespace) -> tuple[list[str] | None, int, int | None]:
    """(prompts or None, images to draw, images per grid row): --prompts FILE gives one row of --n per line."""
    from diffkit.text.prompts import read_prompt_file

    if args.prompt is not None and args.prompts is not None:
        raise DiffkitError("Pass --prompt or --prompts FILE, not both.")
    if args.prompts is not None:
        prompts = read_prompt_file(args.prompts)
        return prompts, args.n * len(prompts), args.n
    return (None if args.prompt is None else [args.prompt]), args.n, None


def class_labels(bundle, labels):
    """The class ids an .npz keeps beside the images (a text model's prompts are not class ids: None)."""
    return labels if bundle.config.model.num_classes > 0 else None
