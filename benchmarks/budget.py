"""Benchmark (issue 12): diffkit's recipe beside the diffusers example recipe, for the same wall-clock budgets.

Each recipe trains alone in its own process for each budget (`--minutes`, default 10 30 60), then its samples are
measured against the test split with the real floor beside them (as many *training* images against the same
reference: the best a model can score at that sample count):

- diffkit's recipe: `diffkit train --config PRESET --max-minutes M train.max_steps=none` (the preset as shipped,
  starting from its budget recipe if it has one for M (`--no-recipe`: the preset as written), its LR plan fitted
  to the budget; `--diffkit-set` adds overrides for a variant), sampled by `Bundle.sample`
  (class-conditional fashion28: the ten classes in turn at guidance 1);
- the diffusers recipe: diffusers' examples/unconditional_image_generation/train_unconditional.py written out as a
  small loop (`train_diffusers`): UNet2DModel (32, 64, 64) channels, one layer per block, attention at the middle
  level, DDPMScheduler linear 1,000 steps, eps target and MSE, AdamW 1e-4 (betas 0.95/0.999, weight decay 1e-6),
  500 warm-up steps then cosine, EMAModel with warm-up (inv_gamma 1, power 3/4, max decay 0.9999), gradient clip
  1, batch 64, fp32, no random flip (the example's default); sampled by diffusers' DPMSolverMultistepScheduler.

Both are sampled with DPM-Solver++(2M), 20 steps, trailing spacing, 2,000 samples; metrics: Inception FID, domain
FID, precision/recall (k = 3, in Inception features) against 2,000 test images, and for `--dataset glyphs` the
share of glyph-like samples (`evaluate/glyph_shape.py`). Rows go to benchmarks/results/budget-DATASET.json after
every (recipe, budget), so a killed run keeps what it measured and a rerun skips the rows it has (`--fresh` not).

    python benchmarks/budget.py                        # fashion28, 10 / 30 / 60 min each: about 3.5 hours
    python benchmarks/budget.py --dataset glyphs --minutes 10
    python benchmarks/budget.py --diffkit-set train.lr=1e-3 --recipes diffkit --out DIR --work DIR
    python benchmarks/budget.py --quick                # a smoke run: 6 s budgets, tiny counts, no Inception
"""

from __future__ import annotations

from diffkit.threads import configure_threads, prepare_environment

prepare_environment()  # the OpenMP wait policy is read when torch loads: the same setting the diffkit CLI uses

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from diffkit.budget import SKIPPED_STEPS  # noqa: E402
from diffkit.config import DataConfig  # noqa: E402
from diffkit.evaluate import metrics  # noqa: E402
from diffkit.evaluate.glyph_shape import glyph_like_fraction  # noqa: E402
from diffkit.evaluate.protocol import generate_samples, load_split, make_extractor, reference_subset  # noqa: E402
from diffkit.images import to_model_range, to_uint8  # noqa: E402
from diffkit.recipes import budget_recipe, read_recipes  # noqa: E402
from diffkit.seeds import derive_seed  # noqa: E402
from quality import (  # noqa: E402
    Reference, add_settings, filled_settings, finish_report, get_classifier, machine_description, trained_so_far,
    write_report)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("diffkit", "diffusers")


@dataclass(frozen=True)
class Dataset:
    """One benchmark dataset: the diffkit preset, its data, and whether a domain classifier applies."""

    preset: str
    data: DataConfig
    domain: bool = True  # glyph labels are characters, and the test split holds other characters: no classifier


DATASETS = {"fashion": Dataset("fashion28", DataConfig(dataset="fashion_mnist", size=28)),
            "glyphs": Dataset("glyphs32", DataConfig(dataset="glyphs", size=32), domain=False)}
FULL = {"n": 2000, "reference_n": 2000, "steps": 20, "classifier_steps": 2000, "diffusers_batch": 64}
QUICK = {"n": 16, "reference_n": 32, "steps": 4, "classifier_steps": 20, "diffusers_batch": 8}
MINUTES = {"full": [10.0, 30.0, 60.0], "quick": [0.1]}

# The diffusers example's defaults (train_unconditional.py), with the network, schedule and batch.
NOISE_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
OPTIMIZER = {"lr": 1e-4, "betas": (0.95, 0.999), "weight_decay": 1e-6, "eps": 1e-8}
EMA = {"decay": 0.9999, "use_ema_warmup": True, "inv_gamma": 1.0, "power": 3 / 4}
WARMUP_STEPS = 500
GRADIENT_CLIP = 1.0
CALIBRATION_STEPS = 10  # timed steps (after diffkit's SKIPPED_STEPS) that fix the cosine's horizon once
PROVISIONAL_HORIZON = 10**9  # before the horizon is known only the warm-up runs, which does not depend on it


def diffusers_unet_config(size: int, channels: int = 1) -> dict:
    """The issue's UNet2DModel: (32, 64, 64) channels, one layer per block, attention at the middle level only."""
    return {"sample_size": size, "in_channels": channels, "out_channels": channels, "layers_per_block": 1,
            "block_out_channels": (32, 64, 64),
            "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")}


def horizon_for(step: int, elapsed: float, budget: float, seconds_per_step: float) -> int:
    """The steps the budget buys: those done plus the whole steps the remaining seconds pay for."""
    return step + max(int((budget - elapsed) / seconds_per_step), 1)


def diffusers_step(model, noise_scheduler, optimizer, lr_scheduler, ema, x0: torch.Tensor,
                   generator: torch.Generator) -> float:
    """One step of the example's loop: noise, MSE on eps, backward, clip, AdamW, LR step, EMA; returns the loss."""
    import torch.nn.functional as F

    eps = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), generator=generator)
    loss = F.mse_loss(model(noise_scheduler.add_noise(x0, eps, t), t).sample, eps)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRADIENT_CLIP)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad()
    ema.step(model.parameters())
    return loss.item()


def train_diffusers(images: torch.Tensor, minutes: float, batch_size: int, directory: Path, seed: int = 0) -> dict:
    """Train the diffusers recipe on uint8 images (N, C, H, W) for `minutes` of loop time; save the EMA UNet."""
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)  # the network's initialisation
    generator = torch.Generator().manual_seed(seed)
    model = UNet2DModel(**diffusers_unet_config(images.shape[-1], images.shape[1])).train()
    noise_scheduler = DDPMScheduler(**NOISE_SCHEDULE)
    optimizer = torch.optim.AdamW(model.parameters(), **OPTIMIZER)
    lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=WARMUP_STEPS,
                                 num_training_steps=PROVISIONAL_HORIZON)
    ema = EMAModel(model.parameters(), model_cls=UNet2DModel, model_config=model.config, **EMA)
    budget, step, horizon, loss = minutes * 60, 0, None, float("nan")
    started = time.monotonic()
    while time.monotonic() - started < budget and (horizon is None or step < horizon):
        order = torch.randperm(images.shape[0], generator=generator)  # an epoch, as shuffle=True; last batch kept
        for start in range(0, images.shape[0], batch_size):
            if time.monotonic() - started >= budget or (horizon is not None and step >= horizon):
                break
            x0 = to_model_range(images[order[start : start + batch_size]])  # (B, C, H, W) in [-1, 1]
            loss = diffusers_step(model, noise_scheduler, optimizer, lr_scheduler, ema, x0, generator)
            step += 1
            if step == SKIPPED_STEPS:
                calibration_start = time.monotonic()
            if horizon is None and step == SKIPPED_STEPS + CALIBRATION_STEPS:
                # The example fixes its horizon up front (epochs x batches); here the budget's steps, measured once.
                seconds_per_step = (time.monotonic() - calibration_start) / CALIBRATION_STEPS
                horizon = horizon_for(step, time.monotonic() - started, budget, seconds_per_step)
                lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=WARMUP_STEPS,
                                             num_training_steps=horizon, last_epoch=step - 1)
    seconds = time.monotonic() - started
    ema.copy_to(model.parameters())
    model.save_pretrained(directory / "unet")
    return {"steps": step, "horizon": horizon, "train_seconds": round(seconds, 1), "batch_size": batch_size,
            "parameters": sum(p.numel() for p in model.parameters()), "last_loss": loss}


def sample_diffusers(directory: Path, n: int, steps: int, seed: int, batch_size: int = 250) -> torch.Tensor:
    """n uint8 samples of a saved diffusers UNet by DPMSolverMultistepScheduler (2M, dpmsolver++, trailing grid)."""
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    model = UNet2DModel.from_pretrained(directory / "unet", low_cpu_mem_usage=False).eval()  # no accelerate here
    scheduler = DPMSolverMultistepScheduler(**NOISE_SCHEDULE, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    shape = (model.config.in_channels, model.config.sample_size, model.config.sample_size)
    chunks = []
    for batch, start in enumerate(range(0, n, batch_size)):
        generator = torch.Generator().manual_seed(derive_seed(seed, batch))
        x = torch.randn((min(batch_size, n - start), *shape), generator=generator)
        scheduler.set_timesteps(steps)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                x = scheduler.step(model(x, t).sample, t, x).prev_sample
        chunks.append(to_uint8(x))  # clipped to [-1, 1] and quantised, as a saved sample would be
    return torch.cat(chunks)


def run_alone(command: list[str]) -> float:
    """Run a command to its end; returns its peak resident memory in MB (wait4 reports it per child)."""
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... exited with status {process.returncode}")
    return usage.ru_maxrss / 1024


def train_recipe(recipe: str, minutes: float, args: argparse.Namespace, directory: Path) -> dict:
    """Train one recipe for one budget in its own process; its steps, batch, parameters, seconds and memory."""
    shutil.rmtree(directory, ignore_errors=True)  # the benchmark's own run directory: every budget starts fresh
    if recipe == "diffusers":
        directory.mkdir(parents=True)
        peak = run_alone([sys.executable, __file__, "--child-diffusers", "--dataset", args.dataset, "--minutes",
                          str(minutes), "--diffusers-batch", str(args.diffusers_batch), "--work", str(directory)])
        return {**json.loads((directory / "result.json").read_text()), "peak_rss_mb": round(peak)}
    from diffkit.bundle import load

    spec = DATASETS[args.dataset]
    overrides = [*args.diffkit_set, "train.max_steps=none", "train.checkpoint_every=1000000",
                 "train.sample_every=0", *(["train.batch_size=8"] if args.quick else [])]
    peak = run_alone([sys.executable, "-m", "diffkit", "train", "--config", spec.preset, "--run-dir", str(directory),
                      "--max-minutes", str(minutes), *(["--quiet"] if args.quick else []),
                      *(["--no-recipe"] if args.no_recipe else []), *overrides])
    steps, trained_minutes = trained_so_far(directory)
    bundle = load(directory)
    recipe_of_budget = None if args.no_recipe else budget_recipe(read_recipes(spec.preset), minutes)
    return {"steps": steps, "train_seconds": round(trained_minutes * 60, 1), "overrides": overrides,
            "budget_recipe": list(recipe_of_budget.overrides) if recipe_of_budget else [],
            "batch_size": bundle.config.train.batch_size, "peak_rss_mb": round(peak),
            "parameters": sum(parameter.numel() for parameter in bundle.network.parameters())}


def draw_samples(recipe: str, directory: Path, args: argparse.Namespace) -> torch.Tensor:
    """The recipe's n samples (uint8), DPM-Solver++(2M) at args.steps, seed 0."""
    if recipe == "diffusers":
        return sample_diffusers(directory, args.n, args.steps, seed=0)
    from diffkit.bundle import load

    samples, _ = generate_samples(load(directory), args.n, sampler="dpmpp_2m", steps=args.steps, spacing="trailing",
                                  seed=0)
    return samples


def measure(images: torch.Tensor, references: dict[str, Reference], real: torch.Tensor, glyphs: bool) -> dict:
    """FID per extractor, precision/recall in the first extractor's features, glyph-likeness: of uint8 images."""
    row = {}
    for position, (name, reference) in enumerate(references.items()):
        features = reference.extractor.features(images)
        row[f"{name}_fid"] = reference.fid(features)
        if position == 0:  # Inception when it is on, else the domain classifier
            row["precision"], row["recall"] = metrics.precision_recall(reference.test, features)
    if glyphs:
        row["glyph_like"] = glyph_like_fraction(images, real)
    return row


def build_references(args: argparse.Namespace, spec: Dataset, work: Path) -> tuple[dict, torch.Tensor, dict, dict]:
    """(references by extractor, the real test images, the floor's numbers, a record of the reference set)."""
    test, training = load_split(spec.data, "test"), load_split(spec.data, "train")
    real = reference_subset(test.images, args.reference_n)
    references, record = {}, {"split": "test", "count": int(real.shape[0])}
    if args.inception:
        references["inception"] = Reference(make_extractor("inception", batch_size=50), real, training.images)
    if spec.domain:
        classifier, record["classifier"] = get_classifier(args, spec.data, work)
        references["domain"] = Reference(make_extractor("domain", classifier), real, training.images)
    floor = measure(reference_subset(training.images, args.n), references, real, glyphs=spec.data.dataset == "glyphs")
    return references, real, floor, record


def evaluate_row(recipe: str, minutes: float, args: argparse.Namespace, directory: Path, references: dict,
                 real: torch.Tensor) -> dict:
    """Train one (recipe, budget) alone, then sample and measure it."""
    row = {"recipe": recipe, "minutes": minutes, "date": datetime.date.today().isoformat(),
           "machine": machine_description(), **train_recipe(recipe, minutes, args, directory)}
    started = time.perf_counter()
    samples = draw_samples(recipe, directory, args)
    row["sampling_seconds"] = round(time.perf_counter() - started, 1)
    row.update(measure(samples, references, real, glyphs=args.dataset == "glyphs"))
    row["evaluation_seconds"] = round(time.perf_counter() - started, 1)
    return row


def main_fid(row: dict) -> float | None:
    """The FID the verdicts use: Inception when measured, else the domain FID."""
    return row.get("inception_fid", row.get("domain_fid"))


def number(row: dict, key: str, digits: int) -> str:
    """A metric of a row, or '-' when it was not measured."""
    return "-" if row.get(key) is None else f"{row[key]:.{digits}f}"


def metric_cells(row: dict) -> list[str]:
    """Inception FID, domain FID, precision/recall, glyph-like share of one row (or of the floor)."""
    pr = "-" if row.get("precision") is None else f"{row['precision']:.3f} / {row['recall']:.3f}"
    return [number(row, "inception_fid", 2), number(row, "domain_fid", 3), pr, number(row, "glyph_like", 3)]


def recipe_label(row: dict) -> str:
    """'diffusers', 'diffkit' or 'diffkit (train.lr=1e-3)' for a variant given by --diffkit-set."""
    return row["recipe"] + (f" ({' '.join(row['variant'])})" if row.get("variant") else "")


def verdicts(report: dict) -> list[str]:
    """diffkit FID / diffusers FID per budget, and the issue's check: FID at 30 minutes <= 3 x the floor."""
    rows = {(row["recipe"], row["minutes"]): row for row in report["rows"] if "error" not in row}
    floor, lines = main_fid(report["floor"]), []
    for minutes in dict.fromkeys(row["minutes"] for row in report["rows"]):
        ours, theirs = rows.get(("diffkit", minutes)), rows.get(("diffusers", minutes))
        if ours and theirs and main_fid(ours) is not None:
            apart = ours.get("machine") != theirs.get("machine")  # steps bought differ between processors
            lines.append(f"- {minutes:g} min: diffkit FID / diffusers FID = {main_fid(ours) / main_fid(theirs):.2f}"
                         + (" (the two rows ran on different processors)" if apart else ""))
    for recipe in RECIPES:
        row = rows.get((recipe, 30.0))
        if row and floor is not None:
            passed = main_fid(row) <= 3 * floor
            lines.append(f"- at 30 min {recipe} FID {main_fid(row):.2f} <= 3 x floor {3 * floor:.2f}: "
                         f"{'yes' if passed else 'no'}")
    return lines


def markdown(report: dict) -> str:
    """The report as a markdown table with its date, processor and protocol, then the verdicts."""
    protocol = report["protocol"]
    pr = f"; precision/recall (k=3) in {protocol['pr_features']} features" if protocol["pr_features"] else ""
    lines = [f"{report['dataset']} ({report['preset']}), {report['date']}, {report['machine']}; "
             f"DPM-Solver++(2M) {protocol['steps']} steps, {protocol['samples']} samples against "
             f"{report['reference']['count']} test images{pr}; floor: {protocol['samples']} training images.", "",
             "| recipe | minutes | steps x batch | params | Inception FID | domain FID | precision / recall "
             "| glyph-like | floor (FID / domain / P / R / glyph-like) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    floor = " / ".join(metric_cells(report["floor"]))
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {recipe_label(row)} | {row['minutes']:g} | failed: {row['error']} | | | | | | |")
            continue
        lines.append(" | ".join([f"| {recipe_label(row)}", f"{row['minutes']:g}",
                                 f"{row['steps']:,} x {row['batch_size']}", f"{row['parameters'] / 1e6:.2f}M",
                                 *metric_cells(row), floor]) + " |")
    notes = [f"- {recipe_label(row)} {row['minutes']:g} min: {row['note']}"
             for row in report["rows"] if row.get("note")]
    return "\n".join(lines + ["", *provenance(report), *notes, *verdicts(report)]) + "\n"


def provenance(report: dict) -> list[str]:
    """Where and when each row ran, when not all rows ran where the header says (a run kept earlier rows)."""
    places: dict[tuple, list[str]] = {}
    for row in report["rows"]:
        key = (row.get("date", report["date"]), row.get("machine", report["machine"]))
        places.setdefault(key, []).append(f"{row['recipe']} {row['minutes']:g} min")
    if list(places) in ([], [(report["date"], report["machine"])]):
        return []
    return [f"- rows of {date}, {machine}: {', '.join(names)}" for (date, machine), names in places.items()]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick swaps in the smoke-run defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="fashion")
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 s budgets, tiny counts, no Inception")
    parser.add_argument("--minutes", type=float, nargs="+", default=None,
                        help=f"budgets (default {MINUTES['full']}; --quick: {MINUTES['quick']})")
    add_settings(parser, FULL, QUICK)
    parser.add_argument("--inception", action=argparse.BooleanOptionalAction, default=None,
                        help="measure Inception FID (default: on, off with --quick)")
    parser.add_argument("--diffkit-set", nargs="+", default=[], metavar="SECTION.KEY=VALUE",
                        help="overrides for a variant of diffkit's recipe, e.g. train.lr=1e-3")
    parser.add_argument("--no-recipe", action="store_true", help="train the preset without its budget recipe")
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES),
                        help="which recipes to train (a variant's run needs no second diffusers row); give a variant "
                             "its own --out and --work, since its report replaces another variant's")
    parser.add_argument("--classifier", default=None, help="a saved domain classifier (default: train one)")
    parser.add_argument("--fresh", action="store_true", help="measure every row again, even those in the JSON")
    parser.add_argument("--work", type=Path, default=None, help="run directories (default runs/budget-DATASET)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child-diffusers", action="store_true", help=argparse.SUPPRESS)
    args = filled_settings(parser.parse_args(argv), FULL, QUICK)
    args.minutes = args.minutes or MINUTES["quick" if args.quick else "full"]
    args.inception = not args.quick if args.inception is None else args.inception
    suffix = "-quick" if args.quick else ""
    args.work = args.work or ROOT / "runs" / f"budget-{args.dataset}{suffix}"
    return args


def variant(args: argparse.Namespace) -> list[str]:
    """How diffkit's recipe differs from the preset with its budget recipe: --no-recipe and --diffkit-set."""
    return [*(["--no-recipe"] if args.no_recipe else []), *args.diffkit_set]


def new_report(args: argparse.Namespace, spec: Dataset) -> dict:
    """The report's header: what was measured, how, where and when."""
    return {"date": datetime.date.today().isoformat(), "machine": machine_description(), "dataset": args.dataset,
            "preset": spec.preset, "quick": args.quick, "variant": variant(args),
            "protocol": {"samples": args.n, "sampler": "dpmpp_2m", "steps": args.steps, "spacing": "trailing",
                         "guidance": 1.0, "inception": args.inception,
                         "pr_features": "Inception" if args.inception else "domain classifier" if spec.domain
                         else None},
            "rows": []}


def previous_rows(stem: Path, report: dict, fresh: bool) -> list[dict]:
    """Rows of an earlier, interrupted run under the same protocol and variant (none with --fresh)."""
    path = stem.with_suffix(".json")
    if fresh or not path.exists():
        return []
    earlier = json.loads(path.read_text())
    same = all(earlier.get(key) == report[key] for key in ("protocol", "variant", "dataset", "quick"))
    stamp = {"date": earlier.get("date"), "machine": earlier.get("machine")}  # rows older than per-row stamps
    return [{**stamp, **row} for row in earlier.get("rows", []) if "error" not in row] if same else []


def still_to_train(args: argparse.Namespace, done: dict) -> list[tuple[float, str]]:
    """(minutes, recipe) of every budget x chosen recipe that no kept row measured, in training order."""
    return [(minutes, recipe) for minutes in args.minutes for recipe in args.recipes if (recipe, minutes) not in done]


def main(argv: list[str] | None = None) -> dict | None:
    """Train and measure every (budget, recipe) in turn, writing the JSON after each; print the table."""
    args = parse_arguments(argv)
    threads = configure_threads()
    spec = DATASETS[args.dataset]
    if args.child_diffusers:  # one diffusers run, alone in this process
        images = load_split(spec.data, "train").images
        result = train_diffusers(images, args.minutes[0], args.diffusers_batch, args.work)
        (args.work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"diffusers: {result['steps']} steps in {result['train_seconds']} s (cosine horizon {result['horizon']})")
        return None
    stem = args.out / f"budget-{args.dataset}{'-quick' if args.quick else ''}"
    report = new_report(args, spec)
    report["threads"] = threads
    done = {(row["recipe"], row["minutes"]): row for row in previous_rows(stem, report, args.fresh)}
    todo = still_to_train(args, done)
    print(f"budget benchmark, {args.dataset}: {len(todo)} trainings, {sum(m for m, _ in todo):g} min of training "
          f"in total ({len(done)} rows kept from {stem}.json), plus references and per-row sampling and features "
          f"(printed after the first row)", flush=True)
    started = time.perf_counter()
    references, real, report["floor"], report["reference"] = build_references(args, spec, args.work)
    print(f"references and floor in {time.perf_counter() - started:.0f} s: {report['floor']}", flush=True)
    for minutes in args.minutes:
        for recipe in args.recipes:
            if (recipe, minutes) in done:
                report["rows"].append(done[recipe, minutes])
                continue
            try:
                row = evaluate_row(recipe, minutes, args, args.work / f"{recipe}-{minutes:g}min", references, real)
            except RuntimeError as error:  # a failed training keeps the other budgets going
                row = {"recipe": recipe, "minutes": minutes, "error": str(error)}
            row["variant"] = variant(args) if recipe == "diffkit" else []
            report["rows"].append(row)
            write_report(report, stem)
            print(json.dumps(row), flush=True)
            left = todo[todo.index((minutes, recipe)) + 1:]
            evaluation = row.get("evaluation_seconds", 0) / 60
            print(f"evaluation took {evaluation:.1f} min; about {sum(m for m, _ in left) + len(left) * evaluation:.0f} "
                  f"min left ({len(left)} rows)", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    finish_report(report, stem, markdown)
    return report


if __name__ == "__main__":
    main()
