"""`diffkit sample`: a bundle -> `Bundle.sample_steps` -> a PNG grid (and optionally a denoising GIF)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit sample`."""
    parser = subparsers.add_parser(
        "sample", help="draw samples from a trained run or bundle into a grid",
        description="Sample from RUN (a directory with config.json + model.safetensors) and save a PNG grid.",
    )
    parser.add_argument("run", metavar="RUN", help="run directory or bundle")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the run's sample.sampler)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    parser.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--label", type=int, default=None,
                        help="class to draw (class-conditional models; default: cycle through the classes)")
    parser.add_argument("--prompt", default=None,
                        help="text models: the English meaning to draw, e.g. \"water\" (all --n images)")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="text models: one prompt per line; one grid row of --n images per prompt")
    parser.add_argument("--out", default="samples.png", help="grid file to write (default samples.png)")
    parser.add_argument("--nrow", type=int, default=None, help="images per grid row (default: square)")
    parser.add_argument("--gif", metavar="PATH", default=None, help="also write the denoising trajectory as a GIF")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance scale: 1 plain conditional, 0 unconditional (default 1)")
    parser.add_argument("--guidance-sweep", metavar="SCALES", default=None,
                        help="comma-separated scales, e.g. 0,1,2,4: one grid row of --n images per scale in --out")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the bundle, run the sampler, write the files."""
    from diffkit.animation import save_trajectory_gif
    from diffkit.bundle import load
    from diffkit.cli.edit import parse_scales, write_guidance_sweep
    from diffkit.images import save_grid
    from diffkit.sampling import run_to_end

    bundle = load(args.run, device=args.device)
    prompts, n, nrow = sample_prompts(args)
    if args.guidance_sweep:
        defaults = bundle.config.sample
        print("wrote " + write_guidance_sweep(
            bundle, parse_scales(args.guidance_sweep), args.out, n=args.n, seed=args.seed,
            sampler=args.sampler or defaults.sampler,
            steps=defaults.steps if args.steps is None else args.steps, label=args.label,
            spacing=defaults.spacing, device=args.device, prompts=prompts))
        return 0
    steps = bundle.sample_steps(n, sampler=args.sampler, steps=args.steps, seed=args.seed, label=args.label,
                                guidance=args.guidance, prompts=prompts)
    args.nrow = args.nrow or nrow
    if not args.gif:
        print(f"wrote {save_grid(run_to_end(steps), args.out, nrow=args.nrow)}")
        return 0
    trajectory = list(steps)  # every step is kept only when the GIF needs it
    print(f"wrote {save_grid(trajectory[-1].x_t, args.out, nrow=args.nrow)}")
    print(f"wrote {save_trajectory_gif(trajectory, args.gif, nrow=args.nrow)}")
    return 0


def sample_prompts(args: argparse.Namespace) -> tuple[list[str] | None, int, int | None]:
    """(prompts or None, images to draw, images per grid row): --prompts FILE gives one row of --n per line."""
    from diffkit.errors import DiffkitError
    from diffkit.text.prompts import read_prompt_file

    if args.prompt is not None and args.prompts is not None:
        raise DiffkitError("Pass --prompt or --prompts FILE, not both.")
    if args.prompts is not None:
        prompts = read_prompt_file(args.prompts)
        return prompts, args.n * len(prompts), args.n
    return (None if args.prompt is None else [args.prompt]), args.n, None
