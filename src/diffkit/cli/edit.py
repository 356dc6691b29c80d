"""`diffkit inpaint | img2img | interpolate`: a bundle + picture files -> `Bundle.inpaint_steps` /
`Bundle.img2img_steps` / `Bundle.interpolate` -> a PNG grid. No maths and no sampling rules here: those live in
`diffkit.bundle.Bundle` and `diffkit.edit`.
"""

from __future__ import annotations

import argparse

import torch

from diffkit.cli.arguments import add_prompt, add_quiet, add_spacing, finite_float, output_file
from diffkit.errors import DiffkitError
from diffkit.images import PICTURE_SUFFIXES
from diffkit.sampling import SAMPLERS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit inpaint`, `diffkit img2img` and `diffkit interpolate`."""
    inpaint_parser = subparsers.add_parser(
        "inpaint", help="fill the masked part of an image",
        description="Keep the pixels of IMAGE where MASK is black and generate those where it is white "
                    "(DDPM steps with the known pixels re-noised at every step; RePaint resampling with --resample).")
    _common(inpaint_parser, default_out="inpainted.png", default_steps=50)
    inpaint_parser.add_argument("--image", required=True, help="picture to complete")
    inpaint_parser.add_argument("--mask", required=True, help="picture of the image's size: white = generate")
    inpaint_parser.add_argument("--resample", type=int, default=1, help="RePaint resampling count (default 1: off)")
    inpaint_parser.add_argument("--jump", type=int, default=10, help="RePaint jump length in steps (default 10)")
    inpaint_parser.set_defaults(func=run_inpaint)

    img2img_parser = subparsers.add_parser(
        "img2img", help="redraw an image with a chosen amount of noise (SDEdit)",
        description="Noise IMAGE to STRENGTH (0 < S <= 1) of the way to pure noise, then denoise it with a sampler.")
    _common(img2img_parser, default_out="img2img.png", default_steps=50)
    img2img_parser.add_argument("--image", required=True, help="picture to start from")
    img2img_parser.add_argument("--strength", type=finite_float, required=True, help="0 < S <= 1: how much to redraw")
    img2img_parser.add_argument("--sampler", default="ddim", help=f"one of {', '.join(SAMPLERS)} (default ddim)")
    img2img_parser.set_defaults(func=run_img2img)

    interpolate_parser = subparsers.add_parser(
        "interpolate", help="morph one image into another through DDIM-inverted noise",
        description="Invert both images to noise with deterministic DDIM, slerp between the noises, decode each.")
    _common(interpolate_parser, default_out="interpolation.png", default_steps=50, with_n=False)
    interpolate_parser.add_argument("--image-a", help="first picture")
    interpolate_parser.add_argument("--image-b", help="last picture")
    interpolate_parser.add_argument("--prompt-b", default=None,
                                    help="text models, without images: morph the meaning --prompt into this one "
                                         "from one noise")
    interpolate_parser.add_argument("--frames", type=int, default=8, help="images in the strip (default 8)")
    interpolate_parser.add_argument("--refine", type=int, default=2,
                                    help="fixed-point refinements per inversion step (default 2)")
    interpolate_parser.set_defaults(func=run_interpolate)


def _common(parser: argparse.ArgumentParser, default_out: str, default_steps: int, with_n: bool = True) -> None:
    """Arguments every editing command takes."""
    parser.add_argument("run", metavar="RUN", help="run directory or bundle (config.json + model.safetensors)")
    parser.add_argument("--steps", type=int, default=default_steps, help=f"sampling steps (default {default_steps})")
    add_spacing(parser, "the run's with its own sampler, else the sampler's recommended one")
    parser.add_argument("--label", type=int, default=None,
                        help="class to condition on (class-conditional models; default: cycle through the classes; "
                             "-1: unconditional)")
    parser.add_argument("--guidance", type=finite_float, default=1.0,
                        help="classifier-free guidance scale (default 1)")
    add_prompt(parser)
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", default=default_out, type=output_file(PICTURE_SUFFIXES),
                        help=f"picture to write (default {default_out})")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_quiet(parser)
    if with_n:
        parser.add_argument("--n", type=int, default=4, help="how many variations (default 4)")


def _read(path: str, bundle) -> torch.Tensor:
    """A picture file as (1, C, H, W) in [-1, 1] on the bundle's device, refused unless it has the model's size."""
    from diffkit.images import load_image

    return bundle.check_image(load_image(path, channels=bundle.image_shape[0]), f"The image {path}")


def run_inpaint(args: argparse.Namespace) -> int:
    """Inpaint n variations; the grid shows the image, the masked image, then the results."""
    from diffkit import load
    from diffkit.images import load_image, save_grid
    from diffkit.progress import run_steps

    bundle = load(args.run, device=args.device)
    image = _read(args.image, bundle)
    known = load_image(args.mask, channels=1) < 0  # (1, H, W): black (and dark grey) pixels are kept
    steps = bundle.inpaint_steps(image, known, args.n, steps=args.steps, spacing=args.spacing, seed=args.seed,
                                 label=args.label, guidance=args.guidance, jump=args.jump, resample=args.resample,
                                 prompt=args.prompt)
    results = run_steps(steps, description="inpainting")[-1].x_t
    masked = torch.where(known.to(image.device).unsqueeze(0), image, torch.zeros_like(image))
    print(f"wrote {save_grid(torch.cat([image, masked, results]), args.out, nrow=args.n + 2)}")
    return 0


def run_img2img(args: argparse.Namespace) -> int:
    """Redraw the image n times at the given strength; the grid shows the image, then the results."""
    from diffkit import load
    from diffkit.images import save_grid
    from diffkit.progress import run_steps

    bundle = load(args.run, device=args.device)
    image = _read(args.image, bundle)
    steps = bundle.img2img_steps(image, args.strength, args.n, sampler=args.sampler, steps=args.steps,
                                 spacing=args.spacing, seed=args.seed, label=args.label, guidance=args.guidance,
                                 prompt=args.prompt)
    results = run_steps(steps, description="img2img")[-1].x_t
    print(f"wrote {save_grid(torch.cat([image, results]), args.out, nrow=args.n + 1)}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    """Write the strip morphing image a into image b as one row."""
    from diffkit import load
    from diffkit.images import save_grid

    if args.prompt_b is not None:
        return _interpolate_meanings(args)
    if not (args.image_a and args.image_b):
        raise DiffkitError("interpolate needs --image-a and --image-b (or, for a text model, --prompt and "
                           "--prompt-b).")
    bundle = load(args.run, device=args.device)
    strip = bundle.interpolate(_read(args.image_a, bundle), _read(args.image_b, bundle), frames=args.frames,
                               steps=args.steps, spacing=args.spacing, label=args.label, guidance=args.guidance,
                               refine=args.refine, prompt=args.prompt)
    print(f"wrote {save_grid(strip, args.out, nrow=args.frames)}")
    return 0


def _interpolate_meanings(args: argparse.Namespace) -> int:
    """Write the strip morphing meaning --prompt into --prompt-b (one noise, blended predictions)."""
    from diffkit import load
    from diffkit.images import save_grid

    if args.prompt is None or args.image_a or args.image_b:
        raise DiffkitError("A meaning interpolation takes --prompt (first meaning) and --prompt-b, and no images.")
    if args.label is not None:
        raise DiffkitError("--prompt-b morphs one meaning into another; drop --label.")
    bundle = load(args.run, device=args.device)
    strip = bundle.interpolate_prompts(args.prompt, args.prompt_b, frames=args.frames, steps=args.steps,
                                       spacing=args.spacing, seed=args.seed, guidance=args.guidance)
    print(f"wrote {save_grid(strip, args.out, nrow=args.frames)}")
    return 0
