"""Benchmark: training-step throughput of each preset's UNet in fp32, bf16 autocast and torch.compile, beside
diffusers' UNet2DModel sized to the same parameter count and depth; peak resident memory of each.

Every measurement runs in its own process (so peak RSS belongs to that configuration alone) and times
`--steps` AdamW steps of the diffusion loss after `--warmup` untimed ones, at the preset's batch size.
Prints a table and writes benchmarks/results/train_speed.json.

    python benchmarks/train_speed.py                         # all presets, all modes
    python benchmarks/train_speed.py --presets glyphs32 --modes fp32 bf16
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESETS = ("glyphs32", "fashion28", "cifar32", "folder")
MODES = ("fp32", "bf16", "compiled")
IMPLEMENTATIONS = ("diffkit", "diffusers")


def diffusers_twin(model_config, size: int):
    """diffusers' UNet2DModel with our depth and attention levels, widths scaled to match our parameter count."""
    from diffusers import UNet2DModel

    from diffkit.nn import UNet

    target = UNet(model_config).num_parameters()
    levels = len(model_config.channel_mults)
    attention = set(model_config.attention_levels)

    def build(base: int):
        widths = tuple(base * multiple for multiple in model_config.channel_mults)
        return UNet2DModel(
            sample_size=size, in_channels=model_config.in_channels, out_channels=model_config.output_channels,
            layers_per_block=model_config.num_res_blocks, block_out_channels=widths,
            down_block_types=tuple("AttnDownBlock2D" if level in attention else "DownBlock2D" for level in range(levels)),
            up_block_types=tuple("AttnUpBlock2D" if level in attention else "UpBlock2D"
                                 for level in reversed(range(levels))),
            norm_num_groups=8, attention_head_dim=8,
            num_class_embeds=model_config.num_classes + 1 if model_config.num_classes else None,
        )

    best = min(range(8, 257, 8), key=lambda base: abs(sum(p.numel() for p in build(base).parameters()) - target))
    return build(best)


def measure_one(preset: str, implementation: str, mode: str, steps: int, warmup: int) -> dict:
    """Time training steps of one (preset, implementation, mode) in this process."""
    from diffkit.config import load_config
    from diffkit.loss import diffusion_loss
    from diffkit.nn import UNet
    from diffkit.schedule import make_schedule

    config = load_config(preset)
    size = config.data.size or {"fashion_mnist": 28, "mnist": 28}.get(config.data.dataset, 32)
    batch = config.train.batch_size
    if implementation == "diffkit":
        network = UNet(config.model)
    else:
        twin = diffusers_twin(config.model, size)
        network = lambda x, t, y=None, twin=twin: twin(x, t, class_labels=y).sample  # noqa: E731
        network.parameters = twin.parameters
    parameters = list(network.parameters())
    model = torch.compile(network) if mode == "compiled" else network
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.T)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand((batch, config.model.in_channels, size, size), generator=generator) * 2 - 1
    y = torch.randint(0, config.model.num_classes, (batch,), generator=generator) if config.model.num_classes else None

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            loss = diffusion_loss(model, schedule, x0, y, generator=generator)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {
        "preset": preset, "implementation": implementation, "mode": mode, "batch_size": batch, "size": size,
        "parameters": sum(p.numel() for p in parameters), "images_per_second": steps * batch / seconds,
        "seconds_per_step": seconds / steps, "warmup_seconds": warmup_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_isolated(preset: str, implementation: str, mode: str, steps: int, warmup: int) -> dict:
    """measure_one in a fresh Python process (clean peak-RSS counter, no compile cache shared)."""
    command = [sys.executable, __file__, "--one", preset, implementation, mode, "--steps", str(steps),
               "--warmup", str(warmup)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"preset": preset, "implementation": implementation, "mode": mode,
                "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    """One line per (preset, mode): diffkit and diffusers side by side with the ratio."""
    print(f"{'preset':<10} {'mode':<9} {'diffkit params':>14} {'img/s':>8} {'RSS MB':>7} | "
          f"{'diffusers params':>16} {'img/s':>8} {'RSS MB':>7} | {'ratio':>6}")
    keyed = {(row["preset"], row["mode"], row["implementation"]): row for row in rows}
    for preset, mode in dict.fromkeys((row["preset"], row["mode"]) for row in rows):
        ours, theirs = keyed.get((preset, mode, "diffkit"), {}), keyed.get((preset, mode, "diffusers"), {})

        def cells(row: dict) -> str:
            if "images_per_second" not in row:
                return f"{'-':>14} {row.get('error', '-')[:16]:>16}"
            return f"{row['parameters']:>14,} {row['images_per_second']:>8.1f} {row['peak_rss_mb']:>7.0f}"

        ratio = (ours["images_per_second"] / theirs["images_per_second"]
                 if "images_per_second" in ours and "images_per_second" in theirs else float("nan"))
        print(f"{preset:<10} {mode:<9} {cells(ours)} | {cells(theirs):>34} | {ratio:>6.2f}")


def main() -> None:
    """Parse arguments; either measure one configuration (child) or all of them (parent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--one", nargs=3, metavar=("PRESET", "IMPLEMENTATION", "MODE"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(*args.one, steps=args.steps, warmup=args.warmup)))
        return
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            for implementation in IMPLEMENTATIONS:
                rows.append(run_isolated(preset, implementation, mode, args.steps, args.warmup))
                print(json.dumps(rows[-1]), flush=True)
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    machine = {"date": date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__}
    (RESULTS / "train_speed.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {RESULTS / 'train_speed.json'}")


if __name__ == "__main__":
    main()
