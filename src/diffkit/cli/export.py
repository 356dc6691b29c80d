"""`diffkit export RUN --out DIR`: a run -> a shareable fp16 bundle (config.json, model.safetensors, command.txt)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit export`."""
    parser = subparsers.add_parser(
        "export", help="write a run's model as a small shareable bundle (fp16 weights by default)",
        description="Copy RUN's config.json and EMA weights (as float16 unless --fp32) into --out, with "
                    "command.txt recording the command that made the export.")
    parser.add_argument("run", metavar="RUN", help="run directory or bundle")
    parser.add_argument("--out", required=True, help="folder to write, e.g. models/glyphs32-text")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    parser.add_argument("--command", default=None,
                        help="the command to record in command.txt (default: this export command)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and say where and how big."""
    from diffkit.export import bundle_megabytes, export_bundle

    out = export_bundle(args.run, args.out, fp16=not args.fp32, command=args.command)
    print(f"wrote {out} ({bundle_megabytes(out):.1f} MB of weights)")
    return 0
