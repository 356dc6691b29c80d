"""Training the KL autoencoder of latent diffusion, with the diffusion trainer's parts and run directory.

The same Fabric launch, AdamW with warm-up and cosine decay, gradient clipping, data shards, signals, budgets,
atomic `state.ckpt` with exact resume, `metrics.csv` and periodic grids (here originals beside their
reconstructions) as `diffkit.train`; no EMA. When training finishes (a step or time budget, not a signal) the
latent scale 1 / std is measured on the training images and written to `latent_scale.json`, which makes the run
directory a usable autoencoder (`diffkit.encoders.load_latent_encoder`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric import Fabric
from tqdm import tqdm

from diffkit.autoencoder_config import FIXED_SECTIONS, AutoencoderRunConfig
from diffkit.bundle import WEIGHTS_FILE, save_weights
from diffkit.checkpoint import (SAMPLES_DIR, STATE_FILE, load_state, prepare_run_dir, restore_random_states,
                                save_training_state)
from diffkit.config import save_config
from diffkit.encoders import measure_latent_scale, save_latent_scale
from diffkit.errors import DiffkitError
from diffkit.images import save_grid, to_model_range
from diffkit.nn.autoencoder import Autoencoder, AutoencoderLoss, autoencoder_loss, check_image_size
from diffkit.run_log import MetricsLog
from diffkit.train import (Launch, StopRequest, TrainResult, _load_in_rank_order, _nonfinite_message, agree,
                           apply_gradients, learning_rate, make_fabric, make_optimizer)
from diffkit.train_data import (NOISE_STREAM, TORCH_STREAM, ShardedBatches, TrainingImages,
                                derive_seed)

# Random streams of the reconstruction grids and the scale measurement, after diffkit.train_data's five.
GRID_STREAM, SCALE_STREAM = 5, 6
COLUMNS = ("step", "epoch", "loss", "l1", "kl", "lr", "grad_norm", "images_per_second", "elapsed_minutes")


@dataclass
class AutoencoderRun:
    """Everything the loop touches."""

    fabric: Fabric
    config: AutoencoderRunConfig
    run_dir: Path
    network: Autoencoder
    model: torch.nn.Module  # what Fabric wrapped
    optimizer: torch.optim.Optimizer
    batches: ShardedBatches
    noise: torch.Generator  # posterior samples of this process
    step: int = 0
    elapsed_seconds: float = 0.0


def resolve_autoencoder_config(config: AutoencoderRunConfig, dataset: TrainingImages) -> AutoencoderRunConfig:
    """The config with data.size from the dataset, after checking channels and that f divides the size."""
    channels, size = int(dataset.images.shape[1]), int(dataset.images.shape[2])
    if config.model.in_channels != channels:
        raise DiffkitError(f"The dataset has {channels}-channel images but model.in_channels="
                           f"{config.model.in_channels}; set model.in_channels={channels}.")
    if config.data.size not in (None, size):
        raise DiffkitError(f"The dataset's images are {size} px but data.size={config.data.size}.")
    check_image_size(config.model, size, int(dataset.images.shape[3]))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, size=size))


def setup_autoencoder_run(fabric: Fabric, config: AutoencoderRunConfig, dataset: TrainingImages, run_dir: Path,
                          resume: bool) -> AutoencoderRun:
    """Network, optimizer, data shards and noise generator on this process; state.ckpt restored when resuming."""
    train = config.train
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM))  # the same initial weights on every process
    network = Autoencoder(config.model)
    model, optimizer = fabric.setup(network, make_optimizer(network, train))
    noise = torch.Generator(device=fabric.device).manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank))
    batches = ShardedBatches(dataset, train.batch_size, train.seed, fabric.global_rank, fabric.world_size,
                             fabric.device)
    run = AutoencoderRun(fabric, config, run_dir, network, model, optimizer, batches, noise)
    if resume:
        state = load_state(run_dir / STATE_FILE)
        if state["dataset_length"] != batches.count:
            raise DiffkitError(f"The checkpoint was trained on {state['dataset_length']} images but the dataset now "
                               f"has {batches.count}; resume with the same data.")
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        run.step, run.elapsed_seconds = int(state["step"]), float(state["elapsed_seconds"])
        if not restore_random_states(state["random"], fabric.global_rank, fabric.world_size, noise, fabric.device):
            noise.manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank, run.step))
    return run


def checkpoint(run: AutoencoderRun) -> None:
    """Write state.ckpt and model.safetensors atomically; every process must call this."""
    state = {"config": run.config.to_dict(), "step": run.step, "epoch": run.batches.position(run.step)[0],
             "dataset_length": run.batches.count, "elapsed_seconds": run.elapsed_seconds,
             "model": run.network.state_dict(), "optimizer": run.optimizer.state_dict()}
    save_training_state(run.fabric, run.run_dir / STATE_FILE, state, run.noise)
    if run.fabric.is_global_zero:
        save_weights(run.network, run.run_dir / WEIGHTS_FILE)


def grid_images(run: AutoencoderRun, count: int) -> torch.Tensor:
    """The same `count` training images (uint8) every time: a seeded choice, so grids compare over the run."""
    generator = torch.Generator().manual_seed(derive_seed(run.config.train.seed, GRID_STREAM))
    chosen = torch.randperm(run.batches.count, generator=generator)[:count]
    return run.batches.images[chosen.to(run.batches.images.device)]


@torch.inference_mode()
def write_reconstructions(run: AutoencoderRun) -> Path:
    """A grid of originals, each followed by its reconstruction (decoded posterior mean)."""
    originals = to_model_range(grid_images(run, run.config.train.grid_images))  # (N, C, H, W)
    run.network.eval()
    reconstructions = run.network.decode(run.network.encode(originals).mean).clamp(-1, 1)
    run.network.train()
    pairs = torch.stack([originals, reconstructions], dim=1).flatten(0, 1)  # (2N, C, H, W): original, reconstruction
    columns = 2 * max(1, math.ceil(math.sqrt(originals.shape[0])))
    return save_grid(pairs, run.run_dir / SAMPLES_DIR / f"step_{run.step:07d}.png", nrow=columns)


def measure_and_save_scale(run: AutoencoderRun) -> dict[str, float]:
    """Measure the latent scale on the training images (or the first scale_images of a seeded order); rank 0."""
    images = run.batches.images
    limit = run.config.train.scale_images
    if limit is not None and limit < images.shape[0]:
        generator = torch.Generator().manual_seed(derive_seed(run.config.train.seed, SCALE_STREAM))
        images = images[torch.randperm(images.shape[0], generator=generator)[:limit].to(images.device)]
    print(f"diffkit: measuring the latent scale on {images.shape[0]} training images", flush=True)
    run.network.eval()
    measured = measure_latent_scale(run.network, images, batch_size=max(run.config.train.batch_size, 64))
    run.network.train()
    save_latent_scale(run.run_dir, measured)
    return measured


def train_autoencoder(config: AutoencoderRunConfig, run_dir: str | Path | None = None, *, resume: bool = False,
                      dataset: TrainingImages | None = None, launch: Launch = Launch(),
                      name: str = "autoencoder") -> TrainResult:
    """Train (or with resume=True continue) the autoencoder run in `run_dir` until a budget or a signal stops it."""
    fabric = make_fabric(config, launch)
    fabric.launch()
    if dataset is None:
        dataset = _load_in_rank_order(fabric, config)
    config = resolve_autoencoder_config(config, dataset)
    run_dir = prepare_run_dir(fabric, config, run_dir, name, resume, fixed=FIXED_SECTIONS)
    run = setup_autoencoder_run(fabric, config, dataset, run_dir, resume)
    if resume and fabric.is_global_zero:
        save_config(config, run_dir / "config.json")
    with StopRequest() as stop:
        result = autoencoder_loop(run, stop, resumed=resume)
    if result.stopped_by in ("max_steps", "max_minutes") and fabric.is_global_zero:
        measured = measure_and_save_scale(run)
        print(f"diffkit: latent scale {measured['scale_factor']:.4f} (latent std {measured['latent_std']:.4f} over "
              f"{measured['images']} training images) in {run_dir}", flush=True)
    return result


def compute_loss(run: AutoencoderRun) -> AutoencoderLoss:
    """L1 + KL on this process's shard of the step's batch."""
    x, _ = run.batches.batch(run.step)  # (B_local, C, H, W)
    return autoencoder_loss(run.model, x, run.config.train.kl_weight, run.noise)


def autoencoder_loop(run: AutoencoderRun, stop: StopRequest, resumed: bool) -> TrainResult:
    """Step until max_steps, max_minutes or a signal; checkpoint, draw grids and log on the way and at the end."""
    fabric, train = run.fabric, run.config.train
    log = MetricsLog(run.run_dir, run.step if resumed else None, COLUMNS) if fabric.is_global_zero else None
    progress = tqdm(total=train.max_steps, initial=run.step, unit="step", dynamic_ncols=True,
                    disable=not fabric.is_global_zero)
    started = interval_started = time.monotonic()
    interval: list[tuple[float, float, float]] = []
    saved_step = run.step if resumed else None
    stopped_by, loss_value = None, None
    try:
        while stopped_by is None and (train.max_steps is None or run.step < train.max_steps):
            step_started = time.monotonic()
            parts = compute_loss(run)
            out_of_time = train.max_minutes is not None and step_started - started >= train.max_minutes * 60
            loss_value, nonfinite, stopping = agree(fabric, parts.loss, stop.signal_name is not None or out_of_time)
            if nonfinite:
                raise DiffkitError(_nonfinite_message(run, f"loss became {loss_value}", saved_step))
            grad_norm = apply_gradients(fabric, run.model, run.optimizer, parts.loss,
                                        learning_rate(run.step, train), train.grad_clip)
            if not math.isfinite(grad_norm):
                raise DiffkitError(_nonfinite_message(run, f"gradient norm became {grad_norm}", saved_step))
            run.step += 1
            run.elapsed_seconds += time.monotonic() - step_started
            interval.append((loss_value, parts.l1.item(), parts.kl.item()))  # l1, kl: this process's shard
            progress.update(1)
            if run.step % train.log_every == 0 and log is not None:
                _log_row(run, log, progress, interval, grad_norm, time.monotonic() - interval_started)
                interval, interval_started = [], time.monotonic()
            if run.step % train.checkpoint_every == 0:
                checkpoint(run)
                saved_step = run.step
            if train.sample_every and run.step % train.sample_every == 0 and fabric.is_global_zero:
                write_reconstructions(run)
            if stopping:
                stopped_by = stop.signal_name or ("max_minutes" if out_of_time else "another process stopping")
        stopped_by = stopped_by or "max_steps"
        if saved_step != run.step:
            checkpoint(run)
        finished = stopped_by in ("max_steps", "max_minutes")
        if finished and train.sample_every and run.step % train.sample_every != 0 and fabric.is_global_zero:
            write_reconstructions(run)
    finally:
        progress.close()
        if log is not None:
            log.close()
    if fabric.is_global_zero:
        print(f"diffkit: stopped by {stopped_by} at step {run.step}; the autoencoder is in {run.run_dir}", flush=True)
    return TrainResult(run.run_dir, run.step, stopped_by, loss_value)


def _log_row(run: AutoencoderRun, log: MetricsLog, progress: tqdm, interval: list[tuple[float, float, float]],
             grad_norm: float, seconds: float) -> None:
    """One metrics.csv row (means over the interval) and the progress bar's numbers."""
    loss, l1, kl = (sum(values) / len(interval) for values in zip(*interval))
    images_per_second = len(interval) * run.config.train.batch_size / max(seconds, 1e-9)
    log.write({"step": run.step, "epoch": run.batches.position(run.step - 1)[0], "loss": loss, "l1": l1, "kl": kl,
               "lr": learning_rate(run.step - 1, run.config.train), "grad_norm": grad_norm,
               "images_per_second": images_per_second, "elapsed_minutes": run.elapsed_seconds / 60})
    progress.set_postfix(loss=f"{loss:.4f}", l1=f"{l1:.4f}", images_per_second=f"{images_per_second:.0f}")
