"""Benchmark: latent against pixel diffusion for 128-px glyphs on a CPU (issue 15).

1. The autoencoder (`glyphs128-ae`, trained for `--ae-minutes` or given by `--autoencoder DIR`): PSNR and SSIM of
   its reconstructions of held-out glyphs (the characters no model trains on), and the domain FID of those
   reconstructions against the originals, beside the floor (as many training glyphs against the same originals).
2. Two diffusion models of similar capacity at 128 px, each given the same CPU budget of `--minutes`: the
   `glyphs128-latent` preset (4 x 32 x 32 latents), which spends it on the autoencoder's minutes plus its own
   diffusion training, and a pixel-space UNet (PIXEL_MODEL below), which trains for all of it. For each: training
   images/s, sampling seconds per image (DPM-Solver++(2M), `--steps`, decoding included) and the domain FID of `--n`
   samples against the held-out glyphs, beside the training-glyph floor.

The full run takes about 4.5 hours, so it goes in stages that survive a stop: each training resumes its budget
from its state.ckpt when the benchmark is run again after a SIGTERM or SIGINT (the timed training must run alone,
so a stopped benchmark exits rather than measuring a half-trained model), a finished training is reused, the
judge is kept in `--runs` (a smoke run has its own), and every measured part is kept in the JSON (`--fresh`
starts over).

Domain features are the radical classifier's penultimate layer (`diffkit.evaluate.text_metrics.train_judges`'s
radical judge, trained here on the training glyphs box-downsampled to `--feature-size` px; every image set is
downsampled the same way before its features are taken). Writes JSON and a markdown table to benchmarks/results/.

    python benchmarks/latent.py                 # the full run: 2 x 2 CPU-hours of training, then measuring
    python benchmarks/latent.py --quick         # a smoke run in seconds on synthetic 32-px images (numbers meaningless)
    python benchmarks/latent.py --latent-model models/glyphs128-latent --pixel-minutes 100
                                                # the shipped latent model measured beside a pixel model trained
                                                # for its budget (autoencoder + diffusion minutes) in this run

A machine whose files do not outlive a session of a few hours cannot hold the whole run, so it splits in two:
the latent model is trained and exported (models/glyphs128-latent records both trainings' steps and minutes),
and a later run measures it beside the pixel model; speeds are only compared within one run.

Run in full on 2026-12-05 with `--latent-model models/glyphs128-latent --pixel-minutes 100` (AMD EPYC with
AVX512-BF16): benchmarks/results/latent.md, and the README's table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from diffkit.autoencoder_config import load_autoencoder_config
from diffkit.bundle import load
from diffkit.checkpoint import STATE_FILE
from diffkit.config import DataConfig, load_config
from diffkit.encoders import load_latent_encoder
from diffkit.evaluate import classifier as domain
from diffkit.evaluate import metrics
from diffkit.evaluate.protocol import generate_samples, load_split, reference_subset
from diffkit.evaluate.reconstruction import psnr, reconstruct, ssim
from diffkit.train import train
from diffkit.latent_model import AUTOENCODER_DIR
from diffkit.train_autoencoder import train_autoencoder
from diffkit.train_loop import TrainResult
from quality import add_settings, filled_settings, machine_description, trained_so_far

ROOT = Path(__file__).resolve().parents[1]
FINISHED = "benchmark-stage.json"  # written into a stage's run directory when its budget is spent
JUDGE = "latent-judge"  # the judge's directory in --runs
# A pixel-space UNet for 128 px with about the latent preset's parameters (both printed): five levels take
# 128 px down to the same 8 x 8 bottleneck with attention, one block per level instead of two.
PIXEL_MODEL = ["model.in_channels=1", "model.channel_mults=[1, 1, 2, 2, 2]", "model.num_res_blocks=1",
               "model.attention_levels=[4]", "latent.autoencoder=none", "latent.autoencoder_sha256=none"]
# --minutes is the latent model's CPU budget (issue 15: a glyphs128-latent model trained for at most 2 CPU-hours,
# autoencoder included); the autoencoder takes --ae-minutes of it. --pixel-minutes is the pixel model's (the same
# budget unless a latent model trained elsewhere, --latent-model, spent another).
FULL = {"ae_minutes": 40.0, "minutes": 120.0, "pixel_minutes": 120.0, "n": 1000, "steps": 20, "held_out": 1000,
        "feature_size": 64, "classifier_steps": 1500, "batch_size": 100}
QUICK = {"ae_minutes": 0.03, "minutes": 0.2, "pixel_minutes": 0.2, "n": 20, "steps": 3, "held_out": 32,
         "feature_size": 16, "classifier_steps": 5, "batch_size": 10}
# --quick: synthetic 32-px squares, tiny networks, no periodic files.
QUICK_DATA = ["data.dataset=synthetic", "data.size=32", "data.options={count = 256, classes = 4}"]
QUICK_AE = [*QUICK_DATA, "model.base_channels=8", "model.groups=4", "train.batch_size=8", "train.sample_every=0",
            "train.checkpoint_every=1000000", "train.scale_images=64"]
QUICK_DIFFUSION = [*QUICK_DATA, "model.base_channels=8", "model.groups=4", "model.num_heads=1",
                   "train.batch_size=8", "train.sample_every=0", "train.checkpoint_every=1000000", "sample.n=4"]


def trained_stage(train_function: Callable[..., TrainResult], config, run_dir: Path, name: str) -> Path:
    """Train a benchmark stage into run_dir: resume its budget if a stopped benchmark left state there, reuse it if
    it finished; a stage stopped by a signal exits the benchmark (measuring it now would be measuring too little)."""
    marker = run_dir / FINISHED
    if marker.is_file():
        print(f"{name}: finished earlier ({marker.read_text().strip()}), reused", flush=True)
        return run_dir
    resume = (run_dir / STATE_FILE).is_file()
    result = train_function(config, run_dir, resume=resume, name=name, quiet=True)
    if result.stopped_by not in ("max_minutes", "max_steps"):
        raise SystemExit(f"{name} stopped by {result.stopped_by} at step {result.step}; run the benchmark again "
                         "(alone) to continue its budget.")
    marker.write_text(json.dumps({"step": result.step, "stopped_by": result.stopped_by}) + "\n")
    print(f"{name}: {result.step} steps ({result.stopped_by}) -> {result.run_dir}", flush=True)
    return run_dir


def train_autoencoder_run(args: argparse.Namespace) -> Path:
    """The glyphs128-ae preset trained for --ae-minutes into RUNS/latent-ae (unless --autoencoder or
    --latent-model, whose bundle holds its autoencoder)."""
    if args.autoencoder:
        return args.autoencoder
    if args.latent_model:
        return args.latent_model / AUTOENCODER_DIR
    overrides = [f"train.max_minutes={args.ae_minutes}", "train.max_steps=none", *(QUICK_AE if args.quick else [])]
    return trained_stage(train_autoencoder, load_autoencoder_config("glyphs128-ae", overrides),
                         args.runs / "latent-ae", "latent-ae")


def train_diffusion(args: argparse.Namespace, name: str, minutes: float, overrides: list[str]) -> Path:
    """The glyphs128-latent preset with `overrides`, trained for `minutes` into RUNS/NAME."""
    budget = [f"train.max_minutes={minutes}", "train.max_steps=none"]
    config = load_config("glyphs128-latent", [*budget, *(QUICK_DIFFUSION if args.quick else []), *overrides])
    return trained_stage(train, config, args.runs / name, name)


@dataclass
class Judge:
    """The radical classifier as a feature extractor on images box-downsampled to `size`."""

    model: domain.DomainClassifier
    size: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of uint8 images (N, C, H, W), downsampled to size x size first."""
        return domain.features(self.model, downsampled(images, self.size))

    def fid(self, fake: torch.Tensor, real: torch.Tensor) -> float:
        """Domain FID of two uint8 image sets."""
        return metrics.fid_from_features(self.features(fake), self.features(real))


def downsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images box-filtered to size x size (float in [-1, 1]); `size` must divide the image size."""
    float_images = images.float() / 127.5 - 1
    return F.avg_pool2d(float_images, images.shape[-1] // size) if images.shape[-1] != size else float_images


def train_judge(args: argparse.Namespace, training) -> tuple[Judge, dict]:
    """The radical classifier (glyphs) or class classifier (--quick's synthetic set) on the training images, kept
    in RUNS/latent-judge so that every stage of a resumed benchmark is judged by the same network."""
    from diffkit.evaluate.text_metrics import radical_classes

    directory = args.runs / JUDGE
    if (directory / domain.CONFIG_NAME).is_file():
        record = json.loads((directory / domain.CONFIG_NAME).read_text())["metadata"]
        return Judge(domain.load_classifier(directory), record["feature_size"]), record

    labels, images = training.labels, training.images
    if not args.quick:
        from diffkit.data.captions import glyph_metadata

        radicals = glyph_metadata(training.class_names, None).radicals[labels]
        kept = radical_classes(radicals, 50)
        if len(kept) < 2:
            raise SystemExit("No radicals found for the glyphs: install Debian unicode-data (Unihan) first.")
        lookup = torch.full((215,), -1, dtype=torch.long)
        lookup[kept] = torch.arange(len(kept))
        labels = lookup[radicals]
        images, labels = images[labels >= 0], labels[labels >= 0]
    started = time.perf_counter()
    model = domain.train_classifier(downsampled(images, args.feature_size), labels, steps=args.classifier_steps,
                                    generator=torch.Generator().manual_seed(0), num_classes=int(labels.max()) + 1)
    record = {"classes": int(labels.max()) + 1, "images": int(images.shape[0]), "steps": args.classifier_steps,
              "feature_size": args.feature_size, "seconds": round(time.perf_counter() - started, 1)}
    domain.save_classifier(model, directory, **record)
    return Judge(model, args.feature_size), record


def autoencoder_metrics(directory: Path, held_out: torch.Tensor, training: torch.Tensor, judge: Judge) -> dict:
    """PSNR, SSIM and domain FID of the autoencoder's reconstructions of the held-out glyphs."""
    encoder = load_latent_encoder(directory, image_size=held_out.shape[-1], channels=held_out.shape[1])
    rebuilt = reconstruct(encoder, held_out)
    steps, minutes = trained_so_far(directory)
    peak = psnr(held_out, rebuilt)
    return {"steps": steps, "minutes": round(minutes, 1), "images": int(held_out.shape[0]),
            "psnr": peak[peak.isfinite()].mean().item(), "ssim": ssim(held_out, rebuilt).mean().item(),
            "domain_fid": judge.fid(rebuilt, held_out),
            "domain_fid_floor": judge.fid(reference_subset(training, held_out.shape[0]), held_out)}


def diffusion_metrics(args: argparse.Namespace, run_dir: Path, held_out: torch.Tensor, judge: Judge) -> dict:
    """Training speed, sampling seconds per image and domain FID of --n samples of one trained model."""
    bundle = load(run_dir)
    steps, minutes = trained_so_far(run_dir)
    batch = bundle.config.train.batch_size
    started = time.perf_counter()
    samples, _ = generate_samples(bundle, args.n, sampler="dpmpp_2m", steps=args.steps, seed=0,
                                  batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    return {"parameters": sum(parameter.numel() for parameter in bundle.network.parameters()),
            "space": "x".join(map(str, bundle.space_shape)), "steps": steps, "minutes": round(minutes, 1),
            "train_images_per_second": round(steps * batch / max(minutes * 60, 1e-9), 1),
            "sample_seconds_per_image": round(seconds / args.n, 4), "samples": args.n,
            "sampler": f"dpmpp_2m/{args.steps}", "domain_fid": judge.fid(samples, reference_subset(held_out, args.n))}


def markdown(report: dict) -> str:
    """The report as markdown tables."""
    ae = report["autoencoder"]
    lines = [f"Latent vs pixel diffusion at {report['image_size']} px ({report['machine']}, {report['date']})", "",
             "| autoencoder | steps | minutes | held-out images | PSNR dB | SSIM | domain FID | floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|",
             f"| {report['autoencoder_dir']} | {ae['steps']} | {ae['minutes']} | {ae['images']} | {ae['psnr']:.2f} | "
             f"{ae['ssim']:.4f} | {ae['domain_fid']:.3f} | {ae['domain_fid_floor']:.3f} |", "",
             "| model | space | parameters | steps | minutes | train img/s | sample s/img | domain FID |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("pixel", "latent"):
        row = report[name]
        lines.append(f"| {name} | {row['space']} | {row['parameters']:,} | {row['steps']} | {row['minutes']} | "
                     f"{row['train_images_per_second']} | {row['sample_seconds_per_image']} | "
                     f"{row['domain_fid']:.3f} |")
    pixel, latent = report["pixel"], report["latent"]
    speedup = pixel["sample_seconds_per_image"] / latent["sample_seconds_per_image"]
    lines += ["", f"Domain FID floor ({report['n']} training glyphs vs held-out): {report['domain_fid_floor']:.3f}. "
              f"CPU budgets: the pixel model {pixel['minutes']} minutes of training; the latent model the "
              f"autoencoder's {ae['minutes']} plus its diffusion training's {latent['minutes']} "
              f"({ae['minutes'] + latent['minutes']:.1f} in all). Sampling (decoding included): the latent model is "
              f"{speedup:.1f}x faster per image."]
    return "\n".join(lines) + "\n"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --quick swaps in the smoke-run defaults."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: synthetic 32-px data, seconds of training")
    add_settings(parser, FULL, QUICK)
    parser.add_argument("--autoencoder", type=Path, default=None, help="a trained autoencoder run (skips training it)")
    parser.add_argument("--latent-model", type=Path, default=None,
                        help="a trained latent model (run or export, e.g. models/glyphs128-latent): measured, not "
                             "trained; its autoencoder is the one measured")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where the runs and the judge go (default benchmarks/runs/latent, or latent-quick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--fresh", action="store_true", help="forget the measured parts of an earlier, stopped run")
    args = filled_settings(parser.parse_args(argv), FULL, QUICK)
    if args.runs is None:  # a smoke run's stages and judge must never stand in for the full run's
        args.runs = ROOT / "benchmarks" / "runs" / ("latent-quick" if args.quick else "latent")
    return args


def previous_report(path: Path, report: dict, fresh: bool) -> dict:
    """The JSON a stopped run of the same benchmark settings wrote (its measured parts are kept), else `report`."""
    if fresh or not path.is_file():
        return report
    earlier = json.loads(path.read_text())
    same = all(earlier.get(key) == report[key] for key in ("quick", "image_size", "n", "settings"))
    return earlier if same else report


def save_report(report: dict, stem: Path) -> None:
    """Write what is measured so far."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    """Train what is not trained yet, measure what is not measured yet, write JSON and markdown; returns the report."""
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    stem = args.out / ("latent-quick" if args.quick else "latent")
    data = DataConfig(dataset="synthetic", size=32, options={"count": 256, "classes": 4}) if args.quick else \
        DataConfig(dataset="glyphs", size=128)
    # Subsets are drawn (protocol.reference_subset): the glyphs are stored in code-point order, which Unicode sorts by
    # radical, so the first 1,000 training glyphs would be a few radicals' and make a floor far above the truth.
    training, held_out = load_split(data, "train"), reference_subset(load_split(data, "test").images, args.held_out)
    settings = {name: getattr(args, name) for name in FULL}
    report = previous_report(stem.with_suffix(".json"), {
        "date": datetime.date.today().isoformat(), "machine": machine_description(), "quick": args.quick,
        "threads": args.threads, "image_size": data.size, "n": args.n, "settings": settings}, args.fresh)
    judge, report["judge"] = train_judge(args, training)
    autoencoder = train_autoencoder_run(args)
    report["autoencoder_dir"] = str(autoencoder)
    if "autoencoder" not in report:
        report["autoencoder"] = autoencoder_metrics(autoencoder, held_out, training.images, judge)
        report["domain_fid_floor"] = judge.fid(reference_subset(training.images, args.n),
                                               reference_subset(held_out, args.n))
        save_report(report, stem)
    latent_minutes = args.minutes - trained_so_far(autoencoder)[1]  # the budget left after the autoencoder
    if latent_minutes <= 0 and not args.latent_model:
        raise SystemExit(f"The autoencoder used all of the {args.minutes} minutes the latent model may spend; "
                         "give --minutes above --ae-minutes.")
    for name, minutes, overrides in (("latent", latent_minutes, [f"latent.autoencoder={autoencoder}"]),
                                     ("pixel", args.pixel_minutes, PIXEL_MODEL)):
        if name not in report:
            given = args.latent_model if name == "latent" else None
            run_dir = given or train_diffusion(args, f"latent-bench-{name}", minutes, overrides)
            report[name] = diffusion_metrics(args, run_dir, held_out, judge)
            save_report(report, stem)  # keep what is measured so far
    report["seconds"] = round(report.get("seconds", 0) + time.perf_counter() - started, 1)
    save_report(report, stem)
    stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md ({report['seconds']} s of measuring and training in all)")
    return report


if __name__ == "__main__":
    main()
