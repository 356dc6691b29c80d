"""Benchmark: invent characters from English meanings (issue 11). Trains the `glyphs32-text` preset for a fixed
number of steps, then measures on the held-out characters' meanings (never trained on): radical accuracy, meaning
retrieval top-1 / top-5 among 32, held-out domain FID and memorisation at guidance 1 / 3 / 5 / 7.5 / 10 with
DPM-Solver++(2M) at 20 steps, each beside its ceiling (real held-out glyphs), floor (unconditional samples; real
training glyphs for FID) and chance. Writes JSON to benchmarks/results/ and prints a table; `--export DIR` also
writes the model as an fp16 bundle (config.json, model.safetensors, command.txt).

    python benchmarks/text_glyphs.py --export models/glyphs32-text   # the full run (about 2 CPU-hours of training)
    python benchmarks/text_glyphs.py --quick          # a smoke run of a few minutes (numbers meaningless)
    python benchmarks/text_glyphs.py --run models/glyphs32-text --count 1024 --scales 7.5 10   # more meanings
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from diffkit.bundle import load
from diffkit.config import load_config
from diffkit.evaluate.text_protocol import format_text_table, glyph_eval_data, judges_for, text_evaluation
from diffkit.export import bundle_megabytes, export_bundle, training_record
from diffkit.train import train

ROOT = Path(__file__).resolve().parents[1]
# The training budget in steps, so that a run sharing the CPU with other work reaches the same model: what two
# hours of training buy when the benchmark runs ALONE on this machine. Measured 2026-12-03 on the AMD EPYC (AVX2,
# no AVX-512; 2 threads): `diffkit train --config glyphs32-text --max-steps 80` alone ran at 28.0 images/s at
# batch 64, i.e. 0.4375 steps/s, so 7,200 s buy 3,150 steps.
STEPS_IN_TWO_HOURS_ALONE = 3_150
SCALES = (1.0, 3.0, 5.0, 7.5, 10.0)
FULL = {"steps": STEPS_IN_TWO_HOURS_ALONE, "limit": None, "count": 256, "judge_steps": 3000, "sample_steps": 20,
        "min_examples": 50,
        "overrides": []}
QUICK = {"steps": 20, "limit": 256, "count": 32, "judge_steps": 20, "sample_steps": 4,
         "min_examples": 5,
         "overrides": ["train.batch_size=16", "train.warmup_steps=5", "train.checkpoint_every=1000000",
                       "train.sample_every=0"]}


def train_model(settings: dict, run_dir: Path | None, data) -> Path:
    """Train glyphs32-text for settings["steps"] steps on the training characters; returns the run directory."""
    overrides = [f"train.max_steps={settings['steps']}", *settings["overrides"]]
    config = load_config("glyphs32-text", overrides)
    result = train(config, run_dir, name="text-glyphs", dataset=data.train)
    print(f"trained {result.step} steps ({result.stopped_by}) -> {result.run_dir}", flush=True)
    return result.run_dir


def main() -> int:
    """Train (or reuse --run), evaluate, write JSON, print the table, optionally export the bundle."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budget and counts")
    parser.add_argument("--run", type=Path, default=None,
                        help="evaluate this trained run or exported bundle (e.g. models/glyphs32-text) instead")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {STEPS_IN_TWO_HOURS_ALONE})")
    parser.add_argument("--judges", type=Path, default=None, help="load/save the radical and meaning judges here")
    parser.add_argument("--export", type=Path, default=None, help="also write the model as an fp16 bundle here")
    parser.add_argument("--out", type=Path, default=None, help="JSON to write (default benchmarks/results/...)")
    parser.add_argument("--count", type=int, default=None,
                        help="held-out meanings to judge (default 256; more narrows the floor's and rates' spread)")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="guidance scales to sample")
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    for key in ("steps", "count"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    started = time.perf_counter()
    config = load_config("glyphs32-text")
    data = glyph_eval_data(config.data, config.text, limit=settings["limit"])
    run_dir = args.run or train_model(settings, None, data)
    trained = training_record(run_dir) or {}
    judges = judges_for(data, args.judges, steps=settings["judge_steps"], min_examples=settings["min_examples"])
    record = text_evaluation(load(run_dir), data, judges, count=settings["count"], scales=args.scales,
                             steps=settings["sample_steps"])
    record.update(
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), quick=args.quick,
        machine={"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
        run=str(run_dir), trained_steps=trained.get("trained_steps"),
        training_minutes=trained.get("training_minutes"), judge_steps=settings["judge_steps"],
        characters_limited_to=settings["limit"], seconds=round(time.perf_counter() - started, 1),
        command=" ".join(shlex.quote(part) for part in [sys.executable, *sys.argv]))
    if args.export:
        if args.export.resolve() != run_dir.resolve():  # evaluating an export writes its benchmark.json beside it
            export_bundle(run_dir, args.export, command=record["command"])
        (args.export / "benchmark.json").write_text(json.dumps(record, indent=2) + "\n")
        record["export"] = {"path": str(args.export), "megabytes": round(bundle_megabytes(args.export), 2)}
    out = args.out or ROOT / "benchmarks" / "results" / f"text_glyphs{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(format_text_table(record))
    print(f"wrote {out} ({record['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
