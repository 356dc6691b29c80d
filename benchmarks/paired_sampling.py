"""Benchmark: diffkit's and diffusers' network evaluations in one process, in alternating blocks, per preset and mode.

`train_speed.py` measures each network in its own process (its own peak memory and compile cache), where the
2-core machine's speed drifts between processes by up to ~20%. Here both networks live in one process and take
turns, `--per-block` evaluations at a time, so a slow spell falls on both: every block pair gives a ratio, and the
table shows the median of each network's block times and the spread of the ratios. The networks, inputs, levers
and heap setting are train_speed's own (`Setting`, `evaluation`), so a mode means the same thing in both.

    python benchmarks/paired_sampling.py                                   # glyphs32 and fashion28, fp32 and bf16
    python benchmarks/paired_sampling.py --modes fp32+model bf16+model      # whole-model torch.compile, both networks
    python benchmarks/paired_sampling.py --kind step                        # the bare training step, paired alike
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from quality import machine_description
from train_speed import PRESETS, RESULTS, Setting, evaluation, parse_mode, timed, training_step


def block_seconds(setting: Setting, work: Callable[[], None], count: int) -> float:
    """Seconds per call of `work` (one evaluation or one training step of `setting`) over a block of `count`."""
    return timed(work, 0, count)[1]


def sampling_works(settings: dict[str, Setting]) -> tuple[int, dict[str, Callable[[], None]]]:
    """(batch, per network one sampling evaluation at the preset's sample.n, the same inputs for both)."""
    for setting in settings.values():
        setting.network.eval().requires_grad_(False)
    batch = settings["diffkit"].config.sample.n
    x, y = settings["diffkit"].inputs(batch, torch.Generator().manual_seed(0))
    t = torch.randint(0, settings["diffkit"].config.diffusion.T, (batch,), generator=torch.Generator().manual_seed(1))
    return batch, {name: partial(evaluation, setting, x, t, y) for name, setting in settings.items()}


def paired(preset: str, mode: str, blocks: int, per_block: int, warmup: int, kind: str = "sample") -> dict:
    """Both networks of (preset, mode) in this process, `blocks` alternating blocks after `warmup` calls each; kind
    "sample" times a network evaluation in inference mode, "step" train_speed's bare training step."""
    settings = {name: Setting(preset, name, mode, False, []) for name in ("diffkit", "diffusers")}
    if kind == "sample":
        batch, works = sampling_works(settings)
    else:
        batch, works = settings["diffkit"].config.train.batch_size, {n: training_step(s) for n, s in settings.items()}
    times: dict[str, list[float]] = {name: [] for name in settings}
    with torch.inference_mode(kind == "sample"):
        start = time.perf_counter()
        for name, setting in settings.items():
            block_seconds(setting, works[name], warmup)  # compiles, for a compiled mode
        warmup_seconds = time.perf_counter() - start
        for _ in range(blocks):
            for name, setting in settings.items():
                times[name].append(block_seconds(setting, works[name], per_block))
    ratios = [theirs / ours for ours, theirs in zip(times["diffkit"], times["diffusers"])]
    return {"preset": preset, "mode": mode, "kind": kind, "batch_size": batch,
            "allocator": settings["diffkit"].allocator,
            "diffkit_images_per_second": batch / statistics.median(times["diffkit"]),
            "diffusers_images_per_second": batch / statistics.median(times["diffusers"]),
            "block_ratios": ratios, "warmup_seconds": warmup_seconds}


def table(rows: list[dict]) -> str:
    """Markdown: per (preset, mode, kind) both networks' img/s (per evaluation or per training step), their ratio and
    the block ratios' range."""
    lines = ["| preset | mode | kind | diffkit img/s | diffusers img/s | ratio | block ratios (min-max) |",
             "|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        ours, theirs = row["diffkit_images_per_second"], row["diffusers_images_per_second"]
        lines.append(f"| {row['preset']} | {row['mode']} | {row['kind']} | {ours:.1f} | {theirs:.1f} | "
                     f"{ours / theirs:.2f} | "
                     f"{min(row['block_ratios']):.2f}-{max(row['block_ratios']):.2f} |")
    return "\n".join(lines)


def main() -> None:
    """Measure every (preset, mode), print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["glyphs32", "fashion28"], choices=PRESETS)
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--blocks", type=int, default=7, help="alternating blocks per network")
    parser.add_argument("--per-block", type=int, default=5, help="evaluations or training steps in one block")
    parser.add_argument("--warmup", type=int, default=3, help="calls before timing (a compiled mode compiles)")
    parser.add_argument("--kind", choices=("sample", "step"), default="sample",
                        help="a sampling evaluation (img/s per NFE) or the bare training step")
    parser.add_argument("--out", type=Path, default=None, help="default results/paired_sampling.json (paired_step)")
    args = parser.parse_args()
    for mode in args.modes:
        parse_mode(mode)
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            rows.append(paired(preset, mode, args.blocks, args.per_block, args.warmup, args.kind))
            print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    machine = {"date": date.today().isoformat(), "cpu": machine_description(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "blocks": args.blocks, "per_block": args.per_block}
    out = args.out or RESULTS / ("paired_sampling.json" if args.kind == "sample" else "paired_step.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
