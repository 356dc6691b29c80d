"""Benchmark: the UNet's images/s in training and sampling beside diffusers' UNet2DModel of the same size, and the
training loop's images/s beside the bare network step, per preset and mode; peak resident memory of each.

A mode is a precision joined with speed levers: `fp32`, `bf16`, `bf16+cl` (channels-last), `bf16+blocks`
(regional torch.compile of the ResBlocks; diffusers' ResnetBlock2D for the twin), `fp32+model` (whole-model
compile), `bf16+cl+blocks`, ... Each lever is applied to both networks alike, and so is the heap setting diffkit runs
with (`allocator.configure_allocator`: freed activations stay in the process; `DIFFKIT_MALLOC=default` measures
glibc's own). Measured, each in its own process:

- `step`: the bare training step (loss, backward, AdamW; diffkit's optimizer for both networks) at the preset's
  batch size, `--steps` timed after `--warmup`;
- `loop`: a real `diffkit.train` run of `--warmup + --loop-steps` steps on random images of the preset's shape
  (log every step, no grid, one checkpoint at the end), its `images_per_second` rows after the warm-up; the loop
  must keep >= 95% of the bare step's speed (issue 14);
- `sample`: one network evaluation per call under inference_mode at the sampling batch (`sample.n`), the way
  `Bundle.speed_up` runs it, images/s per evaluation; plus a whole DDIM run (diffkit's `Bundle.sample` against
  diffusers' DDIMScheduler loop) in images x steps / s.

Prints one JSON line per measurement, then a markdown table, and writes benchmarks/results/train_speed.json.

    python benchmarks/train_speed.py                                  # glyphs32 and fashion28, every mode
    python benchmarks/train_speed.py --presets fashion28 --modes fp32 bf16+cl+blocks
    python benchmarks/train_speed.py --set model.attention_levels=[]  # what attention at 8 x 8 costs
    python benchmarks/train_speed.py --modes fp32+model --kinds sample  # compiled sampling alone
    python benchmarks/train_speed.py --quick                          # a smoke check in one process, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from diffkit.precision import resolve_precision
from quality import machine_description

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESETS = ("glyphs32", "fashion28", "cifar32", "folder")
MODES = ("fp32", "bf16", "fp32+cl", "bf16+cl", "fp32+blocks", "bf16+blocks", "bf16+cl+blocks", "fp32+model")
LEVERS = ("cl", "blocks", "model")
KINDS = ("step", "loop", "sample")  # the loop is diffkit's own, so diffusers has step and sample only
IMPLEMENTATIONS = ("diffkit", "diffusers")


def parse_mode(mode: str) -> dict:
    """'bf16+cl+blocks' -> {precision: bf16, channels_last: True, compile: blocks}."""
    precision, *levers = mode.split("+")
    if precision not in ("fp32", "bf16") or any(lever not in LEVERS for lever in levers):
        raise SystemExit(f"unknown mode {mode!r}: fp32 or bf16, then any of +{', +'.join(LEVERS)}")
    compile_mode = "model" if "model" in levers else "blocks" if "blocks" in levers else "none"
    return {"precision": precision, "channels_last": "cl" in levers, "compile": compile_mode}


# The DDPM layout (Ho et al. 2020; diffkit's presets before issue 14, and diffusers' UNet2DModel habit): channel
# multipliers (1, 2, 2), two ResNet layers per level, attention at the lowest level. The diffusers twin is built in
# it ("ddpm") at diffkit's parameter count, or in diffkit's own layout ("same", what benchmarks/op_share.py needs).
DDPM_LAYOUT = {"channel_mults": (1, 2, 2), "num_res_blocks": 2, "attention_levels": (2,)}
TWINS = ("ddpm", "same")


def twin_layout(model_config, twin: str) -> dict:
    """The layout (channel_mults, num_res_blocks, attention_levels) the diffusers twin copies."""
    if twin == "ddpm":
        return DDPM_LAYOUT
    if len(set(model_config.blocks_per_level)) > 1:  # which uniform layout is its fair twin is not settled yet
        raise SystemExit("diffusers' UNet2DModel has one layers_per_block for every level; the same-layout twin "
                         "needs a single model.num_res_blocks, not a list.")
    return {"channel_mults": model_config.channel_mults, "num_res_blocks": model_config.blocks_per_level[0],
            "attention_levels": model_config.attention_levels}


def diffusers_twin(model_config, size: int, twin: str = "ddpm"):
    """diffusers' UNet2DModel in `twin_layout` with our dropout and conditioning, widths scaled (in steps of 8) to
    match our parameter count."""
    from diffusers import UNet2DModel

    from diffkit.nn import UNet

    target = UNet(model_config).num_parameters()
    layout = twin_layout(model_config, twin)
    levels = len(layout["channel_mults"])
    attention = set(layout["attention_levels"])

    def build(base: int):
        widths = tuple(base * multiple for multiple in layout["channel_mults"])
        return UNet2DModel(
            sample_size=size, in_channels=model_config.in_channels, out_channels=model_config.output_channels,
            layers_per_block=layout["num_res_blocks"], block_out_channels=widths, dropout=model_config.dropout,
            down_block_types=tuple("AttnDownBlock2D" if level in attention else "DownBlock2D"
                                   for level in range(levels)),
            up_block_types=tuple("AttnUpBlock2D" if level in attention else "UpBlock2D"
                                 for level in reversed(range(levels))),
            norm_num_groups=8, attention_head_dim=8,
            num_class_embeds=model_config.num_classes + 1 if model_config.num_classes else None,
        )

    best = min(range(8, 257, 8), key=lambda base: abs(sum(p.numel() for p in build(base).parameters()) - target))
    return build(best)


class Setting:
    """One (preset, implementation, mode): the config, the network, the levers applied, a callable (x, t, y)."""

    def __init__(self, preset: str, implementation: str, mode: str, quick: bool, overrides: list[str],
                 twin: str = "ddpm"):
        from diffkit.acceleration import compiled, use_channels_last
        from diffkit.allocator import configure_allocator
        from diffkit.config import load_config
        from diffkit.nn import UNet

        self.allocator = "tuned" if configure_allocator() else "default"  # a process setting: both networks alike
        self.config = load_config(preset, [*overrides, *(["train.batch_size=8", "sample.n=8"] if quick else [])])
        self.preset, self.implementation, self.mode, self.levers = preset, implementation, mode, parse_mode(mode)
        self.size = self.config.data.size or {"fashion_mnist": 28, "mnist": 28}.get(self.config.data.dataset, 32)
        self.network = UNet(self.config.model) if implementation == "diffkit" else diffusers_twin(self.config.model,
                                                                                                  self.size, twin)
        if self.levers["channels_last"]:
            use_channels_last(self.network)
        if implementation == "diffkit":
            self.model = compiled(self.network, self.levers["compile"])
        else:
            self.model = self._compiled_twin()

    def _compiled_twin(self):
        """The diffusers twin under the same compile lever (blocks: its ResnetBlock2D modules)."""
        from diffusers.models.resnet import ResnetBlock2D

        if self.levers["compile"] == "model":
            return torch.compile(self.network)
        if self.levers["compile"] == "blocks":
            for module in self.network.modules():
                if isinstance(module, ResnetBlock2D):
                    module.compile()
        return self.network

    def __call__(self, x, t, y=None):
        if self.implementation == "diffkit":
            return self.model(x, t, y)
        return self.model(x, t, class_labels=y).sample

    def inputs(self, batch: int, generator: torch.Generator):
        """Random images in [-1, 1] (channels-last with that lever) and labels of the preset's shape."""
        model = self.config.model
        x = torch.rand((batch, model.in_channels, self.size, self.size), generator=generator) * 2 - 1
        if self.levers["channels_last"]:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, model.num_classes, (batch,), generator=generator) if model.num_classes else None
        return x, y

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.levers["precision"] == "bf16")

    def record(self, kind: str, **numbers) -> dict:
        return {"preset": self.preset, "implementation": self.implementation, "mode": self.mode, "kind": kind,
                "parameters": sum(p.numel() for p in self.network.parameters()), "allocator": self.allocator, **numbers,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def timed(function, warmup: int, repeats: int) -> tuple[float, float]:
    """(seconds of the warm-up calls, seconds per timed call)."""
    start = time.perf_counter()
    for _ in range(warmup):
        function()
    warmup_seconds, start = time.perf_counter() - start, time.perf_counter()
    for _ in range(repeats):
        function()
    return warmup_seconds, (time.perf_counter() - start) / repeats


def training_step(setting: Setting):
    """The bare training step as a callable: diffusion loss, backward, AdamW (diffkit's optimizer settings) at the
    preset's batch size, no loop around it (also profiled by benchmarks/op_share.py)."""
    from diffkit.bundle import schedule_of
    from diffkit.loss import diffusion_loss
    from diffkit.optimizer import make_optimizer

    config, batch = setting.config, setting.config.train.batch_size
    optimizer = make_optimizer(setting.network, config.train)
    schedule = schedule_of(config)
    generator = torch.Generator().manual_seed(0)
    x0, y = setting.inputs(batch, generator)

    def step() -> None:
        with setting.autocast():
            loss = diffusion_loss(setting, schedule, x0, y, generator=generator,
                                  min_snr_gamma=config.diffusion.min_snr_gamma)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure_step(setting: Setting, steps: int, warmup: int) -> dict:
    """The bare training step's images/s."""
    batch = setting.config.train.batch_size
    warmup_seconds, seconds = timed(training_step(setting), warmup, steps)
    return setting.record("step", batch_size=batch, images_per_second=batch / seconds, warmup_seconds=warmup_seconds)


def measure_loop(setting: Setting, steps: int, warmup: int) -> dict:
    """A real `diffkit.train` run on random images of the preset's shape; images/s of the rows after the warm-up."""
    import diffkit.train as train_module
    from diffkit.config import apply_overrides
    from diffkit.data.synthetic import synthetic_images
    from diffkit.run_log import read_metrics

    levers, total = setting.levers, warmup + steps
    config = apply_overrides(setting.config, [
        f"train.max_steps={total}", "train.log_every=1", f"train.checkpoint_every={total}", "train.sample_every=0",
        f"train.precision={levers['precision']}", f"train.channels_last={str(levers['channels_last']).lower()}",
        f"train.compile={levers['compile'] if levers['compile'] != 'none' else 'false'}"])
    model, batch = config.model, config.train.batch_size
    dataset = synthetic_images(size=setting.size, count=2 * batch, channels=model.in_channels,
                               classes=max(model.num_classes, 1))
    with tempfile.TemporaryDirectory() as directory:
        train_module.train(config, Path(directory) / "run", dataset=dataset, quiet=True,
                           launch=train_module.Launch(accelerator="cpu"))
        rows = read_metrics(Path(directory) / "run" / "metrics.csv")
    seconds = sum(batch / row["images_per_second"] for row in rows[warmup:])
    return setting.record("loop", batch_size=batch, images_per_second=steps * batch / seconds)


def measure_sample(setting: Setting, evaluations: int, warmup: int, sampler_steps: int) -> dict:
    """One network evaluation at the sampling batch (the Bundle's way), and a whole DDIM run, in images/s per NFE."""
    setting.network.eval().requires_grad_(False)
    batch = setting.config.sample.n
    x, y = setting.inputs(batch, torch.Generator().manual_seed(0))
    t = torch.randint(0, setting.config.diffusion.T, (batch,), generator=torch.Generator().manual_seed(1))

    def evaluate() -> None:
        with torch.inference_mode():
            evaluation(setting, x, t, y)

    warmup_seconds, seconds = timed(evaluate, warmup, evaluations)
    _, run_seconds = timed(lambda: ddim_run(setting, x, y, sampler_steps), 0, 1)
    return setting.record("sample", batch_size=batch, images_per_second=batch / seconds,
                          warmup_seconds=warmup_seconds, ddim_images_per_second=batch * sampler_steps / run_seconds)


def ddim_run(setting: Setting, x, y, steps: int) -> None:
    """DDIM from noise: diffkit's Bundle.sample (its sampling path) or diffusers' DDIMScheduler loop."""
    forward = lambda x_t, t, y=None: evaluation(setting, x_t, t, y)  # noqa: E731
    if setting.implementation == "diffkit":
        from diffkit.bundle import Bundle, schedule_of

        bundle = Bundle(setting.network, schedule_of(setting.config), setting.config, forward=forward)
        bundle.sample(x.shape[0], sampler="ddim", steps=steps, spacing="trailing", labels=y)
        return
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=setting.config.diffusion.T, beta_schedule="squaredcos_cap_v2",
                              timestep_spacing="trailing", clip_sample=True)
    scheduler.set_timesteps(steps)
    sample = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for t in scheduler.timesteps:
            sample = scheduler.step(forward(sample, t.expand(x.shape[0]), y), t, sample).prev_sample


def evaluation(setting: Setting, x_t, t, y):
    """One evaluation the way Bundle.speed_up runs it: channels-last input, autocast, float32 output."""
    if setting.levers["channels_last"]:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    with setting.autocast():
        return setting(x_t, t, y).to(torch.float32, memory_format=torch.contiguous_format)


def measure_one(preset: str, implementation: str, mode: str, kind: str, args: argparse.Namespace) -> dict:
    """One measurement in this process."""
    setting = Setting(preset, implementation, mode, args.quick, args.set, args.twin)
    if kind == "step":
        return measure_step(setting, args.steps, args.warmup)
    if kind == "loop":
        return measure_loop(setting, args.loop_steps, args.warmup)
    return measure_sample(setting, args.evaluations, args.warmup, args.sampler_steps)


def run_isolated(preset: str, implementation: str, mode: str, kind: str, args: argparse.Namespace) -> dict:
    """measure_one in a fresh Python process (its own peak-RSS counter, no compile cache shared)."""
    command = [sys.executable, __file__, "--one", preset, implementation, mode, kind, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--loop-steps", str(args.loop_steps), "--evaluations",
               str(args.evaluations), "--sampler-steps", str(args.sampler_steps),
               "--twin", args.twin, *(["--set", *args.set] if args.set else [])]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"preset": preset, "implementation": implementation, "mode": mode, "kind": kind,
                "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    """A markdown table, one line per (preset, mode): loop vs step, diffkit vs diffusers, memory."""
    keyed = {(row["preset"], row["mode"], row["implementation"], row["kind"]): row for row in rows}

    def number(preset, mode, implementation, kind, key="images_per_second", digits=1) -> str:
        value = keyed.get((preset, mode, implementation, kind), {}).get(key)
        return "-" if value is None else f"{value:,.{digits}f}"

    def ratio(a: tuple, b: tuple, key="images_per_second") -> str:
        top, bottom = keyed.get(a, {}).get(key), keyed.get(b, {}).get(key)
        return "-" if top is None or bottom is None else f"{top / bottom:.2f}"

    lines = ["| preset | mode | loop img/s | step img/s | loop/step | diffusers step | train ratio | sample img/s/NFE "
             "| diffusers sample | sample ratio | DDIM ratio | peak MB (train) | diffusers peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for preset, mode in dict.fromkeys((row["preset"], row["mode"]) for row in rows):
        ours, theirs = (preset, mode, "diffkit"), (preset, mode, "diffusers")
        lines.append(" | ".join([
            f"| {preset}", mode, number(*ours, "loop"), number(*ours, "step"), ratio((*ours, "loop"), (*ours, "step")),
            number(*theirs, "step"), ratio((*ours, "step"), (*theirs, "step")), number(*ours, "sample"),
            number(*theirs, "sample"), ratio((*ours, "sample"), (*theirs, "sample")),
            ratio((*ours, "sample"), (*theirs, "sample"), "ddim_images_per_second"),
            number(*ours, "step", "peak_rss_mb", 0), number(*theirs, "step", "peak_rss_mb", 0)]) + " |")
    errors = [f"{row['preset']} {row['mode']} {row['implementation']} {row['kind']}: {row['error']}"
              for row in rows if "error" in row]
    return "\n".join(lines + [""] + errors)


def median_row(repeats: list[dict]) -> dict:
    """The repeat whose images/s is the median (the lower one of an even count), every figure from that one
    measurement, with all the repeats' images/s beside it; the failures when every repeat failed."""
    measured = sorted((row for row in repeats if "error" not in row), key=lambda row: row["images_per_second"])
    if not measured:
        return repeats[-1]
    return {**measured[(len(measured) - 1) // 2], "repeats": [row["images_per_second"] for row in repeats
                                                               if "error" not in row]}


def measure_all(args: argparse.Namespace) -> list[dict]:
    """Every (preset, mode, implementation, kind), `--repeats` rounds in turn (diffkit and diffusers alternate,
    so a slow spell of a shared machine falls on both), the median of each."""
    measure = measure_one if args.quick else run_isolated
    rows = []
    for preset in args.presets:
        for mode in args.modes:
            settings = [(implementation, kind) for implementation in IMPLEMENTATIONS for kind in args.kinds
                        if implementation == "diffkit" or kind != "loop"]
            repeats: dict[tuple[str, str], list[dict]] = {setting: [] for setting in settings}
            for _ in range(args.repeats):
                for implementation, kind in settings:
                    repeats[implementation, kind].append(measure(preset, implementation, mode, kind, args))
                    print(json.dumps(repeats[implementation, kind][-1]), flush=True)
            rows += [median_row(repeats[setting]) for setting in settings]
    return rows


def main() -> None:
    """Parse arguments; either measure one configuration (child) or all of them (parent)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["glyphs32", "fashion28"], choices=PRESETS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), help=f"default: {' '.join(MODES)}")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS,
                        help="what to measure (default: all; diffusers has no loop)")
    parser.add_argument("--steps", type=int, default=10, help="timed bare training steps")
    parser.add_argument("--loop-steps", type=int, default=20, help="timed steps of the diffkit.train run")
    parser.add_argument("--evaluations", type=int, default=10, help="timed network evaluations at the sampling batch")
    parser.add_argument("--sampler-steps", type=int, default=20, help="steps of the timed DDIM run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every measurement; the median is kept")
    parser.add_argument("--quick", action="store_true",
                        help="smoke check: batches of 8, one step of each, in this process (no timing claims)")
    parser.add_argument("--set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                        help="config overrides for both networks, e.g. model.attention_levels=[] (attention's cost)")
    parser.add_argument("--twin", choices=TWINS, default="ddpm",
                        help="the diffusers twin's layout: DDPM's (1, 2, 2) x 2 blocks (default) or diffkit's own")
    parser.add_argument("--out", type=Path, help="the JSON file (default: benchmarks/results/train_speed.json)")
    parser.add_argument("--one", nargs=4, metavar=("PRESET", "IMPLEMENTATION", "MODE", "KIND"))
    args = parser.parse_args()
    for mode in args.modes:
        parse_mode(mode)
    if args.one:
        print(json.dumps(measure_one(*args.one, args)))
        return
    if args.quick:
        args.steps = args.evaluations = args.warmup = args.loop_steps = 1
        args.sampler_steps, args.repeats = 2, 1
    rows = measure_all(args)
    print(table(rows))
    machine = {"date": date.today().isoformat(), "cpu": machine_description(), "threads": torch.get_num_threads(),
               "torch": torch.__version__, "quick": args.quick, "overrides": args.set, "twin": args.twin,
               "repeats": args.repeats, "auto_precision": resolve_precision("auto", "cpu").name}
    out = args.out or RESULTS / ("train_speed_quick.json" if args.quick else "train_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
