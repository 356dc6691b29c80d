"""Benchmark (issue 14): where a training step's time goes, by kind of operation, for diffkit's UNet and its
diffusers twin of the same parameter count, and the most any implementation change could gain at that layout.

Each (preset, implementation, mode) runs `train_speed.training_step` (loss, backward, AdamW at the preset's batch)
under torch.profiler; every operator's self CPU time goes to one kind: convolution, matmul (linear layers and
attention), normalisation (GroupNorm, LayerNorm), optimizer (everything inside AdamW's step and zero_grad) or other
(element-wise ops, copies, autograd's bookkeeping). The step's wall time is timed apart, without the profiler.

The bound: diffusers' step seconds / diffkit's convolution + matmul + optimizer seconds. Those kernels are oneDNN's
and ATen's for both networks, and a layout of the same parameters does about the same arithmetic, so even a diffkit
that spent nothing on normalisation and everything else would be at most about that much faster than diffusers'
step. An estimate, not a proof: it divides unprofiled wall time by profiled kernel time, and it takes the
optimizer as it is (a fused AdamW would be a lever of its own). A bound well below 1.5 shows issue 14's 1.5x at
matched parameters out of reach for implementation alone at this layout (a cheaper layout, fewer FLOPs for the
same parameters, is then the lever: benchmarks/flops.py). The twin here is always of diffkit's own layout.

    python benchmarks/op_share.py                                     # glyphs32 and fashion28, fp32 and bf16
    python benchmarks/op_share.py --presets fashion28 --modes bf16+cl
    python benchmarks/op_share.py --quick                             # a smoke check, tiny batches

Writes benchmarks/results/op_share.json (op_share_quick.json) and prints a markdown table. Run it alone.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from diffkit.precision import resolve_precision
from quality import machine_description
from train_speed import IMPLEMENTATIONS, RESULTS, Setting, parse_mode, timed, training_step

KINDS = ("convolution", "matmul", "normalisation", "optimizer", "other")
ARITHMETIC = ("convolution", "matmul", "optimizer")  # what an implementation cannot do without at this layout
OPTIMIZER = "Optimizer."  # torch.optim's record_function names: Optimizer.step#AdamW.step, Optimizer.zero_grad#...
NORMALISATIONS = ("group_norm", "layer_norm", "batch_norm")  # exact: aten::normal_ (noise) is not one
MATMUL_WORDS = ("addmm", "bmm", "matmul", "linear", "scaled_dot_product", "flash_attention")


def kind_of(name: str) -> str:
    """The kind of a profiler event's name ('aten::mkldnn_convolution' -> 'convolution'); what runs inside the
    optimizer's step is counted by `event_kind`. Only operators (aten::, mkldnn::) do arithmetic: autograd's node
    records (ConvolutionBackward0, evaluate_function: ...) are bookkeeping, their kernels are their children."""
    if name.startswith(OPTIMIZER):
        return "optimizer"
    namespace, _, operator = name.partition("::")
    if namespace not in ("aten", "mkldnn"):
        return "other"
    if operator.startswith("_foreach") or "fused_adam" in operator:
        return "optimizer"
    if "conv" in operator:
        return "convolution"
    if operator == "mm" or any(word in operator for word in MATMUL_WORDS):
        return "matmul"
    if operator.removeprefix("native_").removesuffix("_backward") in NORMALISATIONS:
        return "normalisation"
    return "other"


def event_kind(event) -> str:
    """The kind of one profiler event: 'optimizer' for anything under an `Optimizer.` record (AdamW's
    per-parameter loop is plain element-wise ops), else `kind_of` its name."""
    parent = event
    while parent is not None:
        if parent.name.startswith(OPTIMIZER):
            return "optimizer"
        parent = parent.cpu_parent
    return kind_of(event.name)


def seconds_by_kind(events, steps: int) -> dict[str, float]:
    """Self CPU seconds per step of each kind, from the profiler's events (microseconds)."""
    totals = dict.fromkeys(KINDS, 0.0)
    for event in events:
        totals[event_kind(event)] += event.self_cpu_time_total / 1e6 / steps
    return totals


def profile_step(setting: Setting, steps: int, warmup: int) -> dict:
    """One setting's step: wall seconds (unprofiled) and profiled self seconds per kind."""
    step = training_step(setting)
    _, wall = timed(step, warmup, steps)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            step()
    kinds = seconds_by_kind(profiler.events(), steps)
    profiled = sum(kinds.values())
    return setting.record("step", batch_size=setting.config.train.batch_size, step_seconds=wall,
                          profiled_seconds=profiled, seconds=kinds,
                          share={kind: seconds / profiled for kind, seconds in kinds.items()},
                          arithmetic_seconds=sum(kinds[kind] for kind in ARITHMETIC))


def bounds(rows: list[dict]) -> list[dict]:
    """Per (preset, mode): diffkit's step / diffusers' step now, and the bound above."""
    keyed = {(row["preset"], row["mode"], row["implementation"]): row for row in rows}
    found = []
    for preset, mode in dict.fromkeys((row["preset"], row["mode"]) for row in rows):
        ours, theirs = keyed.get((preset, mode, "diffkit")), keyed.get((preset, mode, "diffusers"))
        if ours is None or theirs is None:
            continue
        found.append({"preset": preset, "mode": mode, "speedup": theirs["step_seconds"] / ours["step_seconds"],
                      "bound": theirs["step_seconds"] / ours["arithmetic_seconds"]})
    return found


def markdown(rows: list[dict]) -> str:
    """One line per setting (shares in %), then the bound per (preset, mode)."""
    lines = ["| preset | mode | network | params | step s | " + " | ".join(KINDS) + " |",
             "|---|---|---|---:|---:|" + "---:|" * len(KINDS)]
    for row in rows:
        shares = " | ".join(f"{100 * row['share'][kind]:.1f}%" for kind in KINDS)
        lines.append(f"| {row['preset']} | {row['mode']} | {row['implementation']} | {row['parameters']:,} | "
                     f"{row['step_seconds']:.3f} | {shares} |")
    lines += ["", "| preset | mode | diffkit speed-up now | bound (diffusers step / diffkit arithmetic) |",
              "|---|---|---:|---:|"]
    lines += [f"| {b['preset']} | {b['mode']} | {b['speedup']:.2f}x | {b['bound']:.2f}x |" for b in bounds(rows)]
    return "\n".join(lines) + "\n"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; compile levers are refused (a compiled graph hides its operators from the profiler)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["glyphs32", "fashion28"])
    parser.add_argument("--modes", nargs="+", default=["fp32", "bf16"], help="fp32, bf16, optionally +cl")
    parser.add_argument("--steps", type=int, default=5, help="timed and profiled steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE", help="overrides for both")
    parser.add_argument("--quick", action="store_true", help="smoke check: batches of 8, one step each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for mode in args.modes:
        if parse_mode(mode)["compile"] != "none":
            raise SystemExit(f"mode {mode!r}: compiled graphs hide their operators from the profiler; "
                             "use fp32 or bf16, optionally +cl")
    if args.quick:
        args.steps, args.warmup = 1, 1
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    """Profile every (preset, mode, implementation) in turn; write JSON, print the tables."""
    args = parse_arguments(argv)
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            for implementation in IMPLEMENTATIONS:
                setting = Setting(preset, implementation, mode, args.quick, args.set, twin="same")
                rows.append(profile_step(setting, args.steps, args.warmup))
                print(json.dumps(rows[-1]), flush=True)
    print(markdown(rows))
    machine = {"date": date.today().isoformat(), "machine": machine_description(),
               "auto_precision": resolve_precision("auto", "cpu").name, "threads": torch.get_num_threads(),
               "torch": torch.__version__, "quick": args.quick, "overrides": args.set}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("op_share_quick.json" if args.quick else "op_share.json")
    path.write_text(json.dumps({"machine": machine, "rows": rows, "bounds": bounds(rows)}, indent=2) + "\n")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
