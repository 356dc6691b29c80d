"""`diffkit inpaint | img2img | interpolate`: a bundle + picture files -> a library call in `diffkit.edit` -> a PNG.

Also the glue for `diffkit sample --guidance-sweep 0,1,2,4` (`parse_scales`, `write_guidance_sweep`), which
`cli/sample.py` calls. No maths here: everything is in `diffkit.edit` and `diffkit.guidance`.
"""

from __future__ import annotations

import argparse

import torch
from torch import Tensor

from diffkit.edit import img2img, inpaint, interpolate
from diffkit.errors import DiffkitError
from diffkit.guidance import check_conditioning, guidance_sweep
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
    img2img_parser.add_argument("--strength", type=float, required=True, help="0 < S <= 1: how much to redraw")
    img2img_parser.add_argument("--sampler", default="ddim", help=f"one of {', '.join(SAMPLERS)} (default ddim)")
    img2img_parser.set_defaults(func=run_img2img)

    interpolate_parser = subparsers.add_parser(
        "interpolate", help="morph one image into another through DDIM-inverted noise",
        description="Invert both images to noise with deterministic DDIM, slerp between the noises, decode each.")
    _common(interpolate_parser, default_out="interpolation.png", default_steps=50, with_n=False)
    interpolate_parser.add_argument("--image-a", required=True, help="first picture")
    interpolate_parser.add_argument("--image-b", required=True, help="last picture")
    interpolate_parser.add_argument("--frames", type=int, default=8, help="images in the strip (default 8)")
    interpolate_parser.add_argument("--refine", type=int, default=2,
                                    help="fixed-point refinements per inversion step (default 2)")
    interpolate_parser.set_defaults(func=run_interpolate)


def _common(parser: argparse.ArgumentParser, default_out: str, default_steps: int, with_n: bool = True) -> None:
    """Arguments every editing command takes."""
    parser.add_argument("run", metavar="RUN", help="run directory or bundle (config.json + model.safetensors)")
    parser.add_argument("--steps", type=int, default=default_steps, help=f"sampling steps (default {default_steps})")
    parser.add_argument("--label", type=int, default=None, help="class to condition on (class-conditional models)")
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--out", default=default_out, help=f"picture to write (default {default_out})")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    if with_n:
        parser.add_argument("--n", type=int, default=4, help="how many variations (default 4)")


def _open(args: argparse.Namespace, n: int):
    """(bundle, guided denoiser, labels) for n images, with labels and guidance checked against the model."""
    from diffkit import load

    if n < 1:
        raise DiffkitError(f"The number of images must be at least 1, not {n}.")
    bundle = load(args.run, device=args.device)
    denoise, labels = bundle.edit_denoiser(n, args.label, args.guidance)
    return bundle, denoise, labels


def _read(path: str, bundle, device: str) -> Tensor:
    """A picture as (1, C, H, W) in [-1, 1] on `device`, refused unless it has the model's image size."""
    from diffkit.images import load_image

    channels, height, width = bundle.image_shape
    image = load_image(path, channels=channels).unsqueeze(0)
    if tuple(image.shape[-2:]) != (height, width):
        raise DiffkitError(f"The image {path} is {image.shape[-1]}x{image.shape[-2]} pixels but this model makes "
                           f"{width}x{height} images; resize it first.")
    return image.to(device)


def _generator(args: argparse.Namespace) -> torch.Generator:
    """The seeded generator on the chosen device."""
    return torch.Generator(device=args.device).manual_seed(args.seed)


def run_inpaint(args: argparse.Namespace) -> int:
    """Inpaint n variations; the grid shows the image, the masked image, then the results."""
    from diffkit.images import load_image, save_grid

    bundle, denoise, labels = _open(args, args.n)
    image = _read(args.image, bundle, args.device)
    mask = load_image(args.mask, channels=1).to(args.device)  # (1, H, W) in [-1, 1]
    known = mask < 0  # black (and dark grey) pixels are kept
    results = inpaint(denoise, bundle.schedule, image.expand(args.n, -1, -1, -1), known, steps=args.steps,
                      y=labels, generator=_generator(args), resample=args.resample, jump=args.jump, clip_x0=1.0)
    masked = torch.where(known.unsqueeze(0), image, torch.zeros_like(image))
    print(f"wrote {save_grid(torch.cat([image, masked, results]), args.out, nrow=args.n + 2)}")
    return 0


def run_img2img(args: argparse.Namespace) -> int:
    """Redraw the image n times at the given strength; the grid shows the image, then the results."""
    from diffkit.images import save_grid

    bundle, denoise, labels = _open(args, args.n)
    image = _read(args.image, bundle, args.device)
    results = img2img(denoise, bundle.schedule, image.expand(args.n, -1, -1, -1), args.strength,
                      sampler=args.sampler, steps=args.steps, y=labels, generator=_generator(args), clip_x0=1.0)
    print(f"wrote {save_grid(torch.cat([image, results]), args.out, nrow=args.n + 1)}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    """Write the strip morphing image a into image b as one row."""
    from diffkit.images import save_grid

    bundle, denoise, labels = _open(args, 1)
    image_a, image_b = _read(args.image_a, bundle, args.device), _read(args.image_b, bundle, args.device)
    strip = interpolate(denoise, bundle.schedule, image_a, image_b, frames=args.frames, steps=args.steps,
                        y=labels, refine=args.refine)
    print(f"wrote {save_grid(strip, args.out, nrow=args.frames)}")
    return 0


def parse_scales(text: str) -> list[float]:
    """'0,1,2,4' -> [0.0, 1.0, 2.0, 4.0], refusing anything else in one sentence."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise DiffkitError(f"--guidance-sweep takes comma-separated numbers such as 0,1,2,4, not '{text}'.") from None
    if not scales or min(scales) < 0:
        raise DiffkitError(f"--guidance-sweep needs at least one scale, all at least 0, not '{text}'.")
    return scales


def write_guidance_sweep(bundle, scales: list[float], path: str, *, n: int, seed: int, sampler: str,
                         steps: int | None, label: int | None, spacing: str = "trailing", device: str = "cpu") -> str:
    """Sample n images per scale from the same noise and save one grid row per scale; returns the path written."""
    from diffkit.bundle import sample_labels
    from diffkit.images import save_grid

    model = bundle.config.model
    if model.num_classes == 0 and model.context_dim == 0:
        raise DiffkitError("--guidance-sweep needs a class-conditional model, but this model is unconditional.")
    labels = sample_labels(n, model.num_classes, label, device)
    check_conditioning(model.num_classes, model.context_dim, labels, max(scales))  # refuse before sampling
    rows = guidance_sweep(bundle.denoiser, bundle.schedule.to(device), (n, *bundle.image_shape), labels, scales,
                          model.num_classes, seed=seed, sampler=sampler, steps=steps, spacing=spacing, device=device,
                          clip_x0=1.0)
    return str(save_grid(rows, path, nrow=n))
