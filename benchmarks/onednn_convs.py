"""Benchmark (issue 14): which oneDNN kernels run a training step's convolutions, in which memory layout, and how
much of their time goes to padded channels and to layout reorders, for diffkit's UNet and its diffusers twin.

oneDNN's direct kernels hold channels in blocks of the vector width: 8 floats with AVX2 (layout tag aBcd8b), 16 with
AVX-512 (aBcd16b). For plain (not channels-last) data they round the channel counts up to whole blocks (oneDNN's
`jit_avx512_common_conv_fwd_kernel::init_conf` and the AVX2 one: ic, oc = rnd_up(ic, block), rnd_up(oc, block)), so a
24-channel layer costs what a 32-channel one does on AVX-512 and nothing extra on AVX2; and a plain NCHW tensor is
reordered into the blocked layout and back around every convolution. Each network runs `train_speed.training_step`
in a child process that turns oneDNN's verbose mode on for one step after the warm-up; the table sums oneDNN's own
execution times: convolutions, reorders, and the convolution time spent on padding (each call's time times its
padded fraction, 1 - ic * oc / (padded ic * padded oc)).

    python benchmarks/onednn_convs.py                           # glyphs32 and fashion28, fp32
    python benchmarks/onednn_convs.py --presets glyphs32 --modes fp32 bf16 fp32+cl

Writes benchmarks/results/onednn_convs.json and prints a markdown table. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

from quality import machine_description
from train_speed import IMPLEMENTATIONS, PRESETS, RESULTS, Setting, parse_mode, training_step

VERBOSE = "onednn_verbose,"
BLOCK = re.compile(r"[a-zA-Z]*B[a-z]*(\d+)b")  # aBcd8b, aBcd16b: channels (the B) in blocks of 8 or 16
CHANNELS = re.compile(r"_ic(\d+)oc(\d+)")  # mb64_ic72oc24_ih32...


@dataclass(frozen=True)
class Call:
    """One oneDNN primitive execution from a verbose line."""

    kind: str  # convolution, reorder, ...
    implementation: str  # jit:avx2, brgconv:avx512_core, ...
    pass_kind: str  # forward_training, backward_data, backward_weights, ...
    milliseconds: float
    channels: tuple[int, int] | None = None  # (ic, oc) of a convolution
    blocks: tuple[int, int] = (1, 1)  # the channel block of its src and dst layouts (1: not blocked)

    @property
    def padded_fraction(self) -> float:
        """The share of the call's arithmetic spent on channels that are padding (0 without blocking)."""
        if self.channels is None:
            return 0.0
        ic, oc = self.channels
        padded = round_up(ic, self.blocks[0]) * round_up(oc, self.blocks[1])
        return 1 - ic * oc / padded


def round_up(count: int, block: int) -> int:
    """count rounded up to a whole number of blocks."""
    return -(-count // block) * block


def block_of(descriptor: str) -> int:
    """The channel block of one memory descriptor ('src:f32:a:blocked:aBcd8b::f0' -> 8; plain nchw or nhwc -> 1)."""
    match = BLOCK.search(descriptor.split(":", 4)[-1])
    return int(match.group(1)) if match else 1


def parse_call(line: str) -> Call | None:
    """A Call from an `onednn_verbose,v1,primitive,exec,...` line, None for any other line."""
    fields = line.strip().split(",")
    if len(fields) < 13 or fields[:4] != ["onednn_verbose", "v1", "primitive", "exec"]:
        return None
    kind, implementation, pass_kind, descriptors, problem = fields[5], fields[6], fields[7], fields[8], fields[11]
    milliseconds = float(fields[-1])
    if kind != "convolution":
        return Call(kind, implementation, pass_kind, milliseconds)
    by_name = {descriptor.split(":", 1)[0]: descriptor for descriptor in descriptors.split()}
    match = CHANNELS.search(problem)
    # A grouped convolution (problem 'g2mb...') pads within each group; the UNets here have none.
    channels = (int(match.group(1)), int(match.group(2))) if match and not problem.startswith("g") else None
    # The first convolution reads a plain image (src not blocked): only its output channels are padded.
    blocks = (block_of(by_name.get("src", "")), block_of(by_name.get("dst", "")))
    return Call(kind, implementation, pass_kind, milliseconds, channels, blocks)


def instruction_set(lines: list[str]) -> str:
    """oneDNN's ISA from its `info,cpu,isa:` line ('Intel AVX2'), or unknown."""
    for line in lines:
        if line.startswith(VERBOSE) and ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return "unknown"


def summary(lines: list[str]) -> dict:
    """Milliseconds per primitive kind, padding milliseconds, and the padded channel pairs with their times."""
    calls = [call for call in map(parse_call, lines) if call is not None]
    by_kind: dict[str, float] = defaultdict(float)
    padded_pairs: dict[str, float] = defaultdict(float)
    implementations: dict[str, float] = defaultdict(float)
    padding = 0.0
    for call in calls:
        by_kind[call.kind] += call.milliseconds
        if call.kind == "convolution":
            implementations[call.implementation] += call.milliseconds
        fraction = call.padded_fraction
        if fraction > 0:
            ic, oc = call.channels
            padded_pairs[f"{ic}->{oc} as {round_up(ic, call.blocks[0])}->{round_up(oc, call.blocks[1])}"] += (
                call.milliseconds)
            padding += call.milliseconds * fraction
    return {"isa": instruction_set(lines), "calls": len(calls), "milliseconds": dict(by_kind),
            "padding_milliseconds": padding, "convolution_implementations": dict(implementations),
            "padded_channels": dict(sorted(padded_pairs.items(), key=lambda item: -item[1]))}


def verbose_step(preset: str, implementation: str, mode: str, warmup: int, quick: bool) -> None:
    """In this (child) process: warm up, then one training step with oneDNN's verbose lines on stdout."""
    setting = Setting(preset, implementation, mode, quick, [])
    step = training_step(setting)
    for _ in range(warmup):
        step()
    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        step()
    print(json.dumps({"parameters": sum(p.numel() for p in setting.network.parameters())}), flush=True)


def measure(preset: str, implementation: str, mode: str, warmup: int, quick: bool) -> dict:
    """verbose_step in a fresh process (oneDNN prints from C, so only a child's stdout holds every line)."""
    command = [sys.executable, __file__, "--one", preset, implementation, mode, "--warmup", str(warmup),
               *(["--quick"] if quick else [])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise SystemExit(f"{preset} {implementation} {mode}: {lines[-1] if lines else 'failed'}")
    lines = result.stdout.splitlines()
    # C's stdout buffer may reach the pipe after Python's own last line: take the JSON line wherever it is.
    last = json.loads(next(line for line in reversed(lines) if line.startswith("{")))
    return {"preset": preset, "implementation": implementation, "mode": mode, **last, **summary(lines)}


def markdown(rows: list[dict]) -> str:
    """One line per network: ISA, convolution and reorder ms, padded share, the padded channel pairs."""
    lines = ["| preset | mode | network | params | oneDNN ISA | convolution ms | reorder ms | padding share of "
             "convolution | padded channels (ms) |", "|---|---|---|---:|---|---:|---:|---:|---|"]
    for row in rows:
        convolution = row["milliseconds"].get("convolution", 0.0)
        share = row["padding_milliseconds"] / convolution if convolution else 0.0
        padded = ", ".join(f"{pair} ({ms:.0f})" for pair, ms in list(row["padded_channels"].items())[:4]) or "none"
        lines.append(f"| {row['preset']} | {row['mode']} | {row['implementation']} | {row['parameters']:,} | "
                     f"{row['isa']} | {convolution:.0f} | {row['milliseconds'].get('reorder', 0.0):.0f} | "
                     f"{100 * share:.1f}% | {padded} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every (preset, mode, network) in a child; write JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["glyphs32", "fashion28"], choices=PRESETS)
    parser.add_argument("--modes", nargs="+", default=["fp32"], help="fp32 or bf16, optionally +cl")
    parser.add_argument("--warmup", type=int, default=3, help="steps before the verbose one")
    parser.add_argument("--quick", action="store_true", help="smoke check: batches of 8, one warm-up step")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--one", nargs=3, metavar=("PRESET", "IMPLEMENTATION", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for mode in args.modes:
        if parse_mode(mode)["compile"] != "none":
            raise SystemExit(f"mode {mode!r}: compiled graphs fuse their own kernels; use fp32 or bf16, optionally +cl")
    warmup = 1 if args.quick else args.warmup
    if args.one:
        verbose_step(*args.one, warmup, args.quick)
        return []
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            for implementation in IMPLEMENTATIONS:
                rows.append(measure(preset, implementation, mode, warmup, args.quick))
                print(json.dumps({key: value for key, value in rows[-1].items() if key != "padded_channels"}),
                      flush=True)
    print(markdown(rows))
    machine = {"date": date.today().isoformat(), "machine": machine_description(), "torch": torch.__version__,
               "quick": args.quick}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("onednn_convs_quick.json" if args.quick else "onednn_convs.json")
    path.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
