"""Benchmark: how diffkit's speed degrades when another process keeps one of the cores busy.

On a small machine torch's OpenMP threads wait for each other at every parallel region; when a competing
process holds one core, a thread that is descheduled holds up the others until the scheduler returns to it.
This runs two workloads, each in a fresh process (thread settings must be fixed before torch loads), under
several thread settings, once alone and once beside a busy-looping competitor per `--competitors`:

- `ddpm-tiny`: 1,000 DDPM steps of a tiny UNet on a (4, 1, 8, 8) tensor (small ops: barrier-bound);
- `train-fashion28`: training steps of the fashion28 preset's UNet at batch 128 (large ops: compute-bound).

Prints a table of seconds / images per second and the slowdown under load, and writes
benchmarks/results/load.json. Run it alone on the machine.

    python benchmarks/load.py                    # every setting, alone and with one competitor
    python benchmarks/load.py --settings default auto --train-steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# Each setting is the environment a fresh process starts with; "auto" is diffkit's own choice (diffkit.threads).
SETTINGS = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one-thread": {"OMP_NUM_THREADS": "1"},
    "auto": {"DIFFKIT_THREADS": "auto"},
}
WORKLOADS = ("ddpm-tiny", "train-fashion28")
BUSY_LOOP = "while True: pass"


def ddpm_tiny() -> float:
    """Seconds for 1,000 DDPM steps of a tiny UNet on a (4, 1, 8, 8) tensor."""
    import torch

    from diffkit.nn.unet import UNet, UNetConfig
    from diffkit.process import eps_denoiser
    from diffkit.sampling import sample
    from diffkit.schedule import linear

    schedule = linear(1000)
    network = UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
                              num_heads=1, groups=4)).eval()
    denoise = eps_denoiser(network, schedule, "eps")
    start = time.perf_counter()
    with torch.inference_mode():
        sample(denoise, schedule, (4, 1, 8, 8), sampler="ddpm", steps=1000,
               generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def train_fashion28(steps: int) -> float:
    """Images per second of fashion28 training steps (AdamW on the diffusion loss, batch 128, fp32)."""
    import torch

    from diffkit.config import load_config
    from diffkit.loss import diffusion_loss
    from diffkit.nn.unet import UNet
    from diffkit.schedule import make_schedule

    config = load_config(ROOT / "configs" / "fashion28.toml")
    network = UNet(config.model)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-4)
    schedule = make_schedule(config.diffusion.schedule, config.diffusion.T)
    generator = torch.Generator().manual_seed(0)
    batch = config.train.batch_size
    x0 = torch.rand((batch, 1, 28, 28), generator=generator) * 2 - 1
    labels = torch.randint(0, 10, (batch,), generator=generator)

    def step() -> None:
        loss = diffusion_loss(network, schedule, x0, labels, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator and oneDNN primitives
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def child(workload: str, train_steps: int) -> dict:
    """Run one workload in this process (its thread settings came with the environment)."""
    auto = os.environ.get("DIFFKIT_THREADS") == "auto"
    if auto:  # what the command line does: the wait policy before torch loads, then threads by the load
        from diffkit.threads import configure_threads, prepare_environment

        prepare_environment()
    import torch

    if auto:
        configure_threads("auto")
    result = {"threads": torch.get_num_threads()}
    if workload == "ddpm-tiny":
        result["seconds"] = ddpm_tiny()
    else:
        result["images_per_second"] = train_fashion28(train_steps)
    return result


def measure(workload: str, setting: str, competitors: int, train_steps: int, timeout: float) -> dict:
    """One fresh process for (workload, setting), beside `competitors` busy loops."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(competitors)]
    try:
        time.sleep(0.5 if busy else 0)
        environment = {**os.environ, **SETTINGS[setting], "PYTHONPATH": str(ROOT / "src")}
        command = [sys.executable, __file__, "--child", workload, "--train-steps", str(train_steps)]
        try:
            done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout, check=True)
        except subprocess.TimeoutExpired:
            return {"timeout": timeout}
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        for process in busy:
            process.kill()
            process.wait()


def print_table(rows: list[dict]) -> None:
    """Alone vs loaded, per workload and setting."""
    print(f"{'workload':<17} {'setting':<11} {'threads':>7} {'alone':>12} {'loaded':>12} {'slowdown':>9}")
    for row in rows:
        key = "seconds" if row["workload"] == "ddpm-tiny" else "images_per_second"
        unit = "s" if key == "seconds" else " img/s"
        alone, loaded = row["alone"].get(key), row["loaded"].get(key)
        text = [f"{value:.2f}{unit}" if value is not None else "timeout" for value in (alone, loaded)]
        slowdown = None
        if alone and loaded:
            slowdown = loaded / alone if key == "seconds" else alone / loaded
        print(f"{row['workload']:<17} {row['setting']:<11} {row['alone'].get('threads', '?'):>7} {text[0]:>12} "
              f"{text[1]:>12} {'' if slowdown is None else f'{slowdown:.2f}x':>9}")


def main() -> None:
    """Measure every (workload, setting) alone and loaded; print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--competitors", type=int, default=1, help="busy-looping processes in the loaded runs")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds before a run is called a timeout")
    parser.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.train_steps)))
        return
    rows = []
    for workload in args.workloads:
        for setting in args.settings:
            row = {"workload": workload, "setting": setting}
            for condition, competitors in (("alone", 0), ("loaded", args.competitors)):
                row[condition] = measure(workload, setting, competitors, args.train_steps, args.timeout)
            rows.append(row)
            print(f"  {workload} {setting}: {row}", file=sys.stderr, flush=True)
    print_table(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"date": date.today().isoformat(), "processor": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "competitors": args.competitors, "rows": rows}
    (RESULTS / "load.json").write_text(json.dumps(record, indent=2))
    print(f"wrote {RESULTS / 'load.json'}")


if __name__ == "__main__":
    main()
