"""Training the KL autoencoder of latent diffusion, with the diffusion trainer's parts and run directory.

The same Fabric launch, run-directory lock, AdamW with warm-up and cosine decay, gradient clipping, data shards,
signals, budgets, checkpoint write order with exact resume, `metrics.csv` and periodic grids (here originals
beside their reconstructions) as `diffkit.train`: `diffkit.train_loop.training_loop` runs with `AUTOENCODER_PARTS`;
no EMA.
When training finishes (a step or time budget, not a signal) the latent scale 1 / std is measured on the
training images and written to `latent_scale.json`, which makes the run directory a usable autoencoder
(`diffkit.encoders.load_latent_encoder`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric import Fabric

from diffkit.autoencoder_config import FIXED_SECTIONS, AutoencoderRunConfig
from diffkit.budget import Budget
from diffkit.checkpoint import REQUIRED, load_state, restore_random_states
from diffkit.encoders import measure_latent_scale, save_latent_scale
from diffkit.images import save_grid, to_model_range
from diffkit.nn.autoencoder import Autoencoder, AutoencoderLoss, autoencoder_loss, check_image_size
from diffkit.optimizer import learning_rate, make_optimizer
from diffkit.run_directory import SAMPLES_DIR, STATE_FILE, prepare_run_dir
from diffkit.run_log import MetricsLog
from diffkit.seeds import GRID_STREAM, NOISE_STREAM, SCALE_STREAM, TORCH_STREAM, derive_seed
from diffkit.stop_request import StopRequest
from diffkit.train_data import ShardedBatches, TrainingImages
from diffkit.train_loop import (Launch, LoopParts, TrainResult, apply_gradients, checked_image_size, continue_budget,
                                load_in_rank_order, make_fabric, restore_progress, start_log, training_loop,
                                write_checkpoint)

COLUMNS = ("step", "epoch", "loss", "l1", "kl", "lr", "grad_norm", "images_per_second", "elapsed_minutes")
STATE_KEYS = tuple(key for key in REQUIRED if key != "ema")  # what an autoencoder's state.ckpt must hold


@dataclass
class AutoencoderRun:
    """Everything the loop touches (`diffkit.train_loop.TrainingRun`: no EMA or schedule)."""

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
    saved_step: int | None = None  # the step state.ckpt holds (None before the first checkpoint)
    log: MetricsLog | None = None  # rank 0 only
    quiet: bool = False  # no progress bar or status lines
    budget: Budget | None = None  # the learning-rate plan and time budget (restored from state.ckpt)


def resolve_autoencoder_config(config: AutoencoderRunConfig, dataset: TrainingImages) -> AutoencoderRunConfig:
    """The config with data.size from the dataset, after checking channels and that f divides the size."""
    size = checked_image_size(config, dataset)
    check_image_size(config.model, size, int(dataset.images.shape[3]))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, size=size))


def setup_autoencoder_run(fabric: Fabric, config: AutoencoderRunConfig, dataset: TrainingImages, run_dir: Path,
                          resume: bool) -> tuple[AutoencoderRun, list[dict]]:
    """Network, optimizer, data shards and noise generator on this process; state.ckpt restored when resuming.

    Also returns the metrics rows the checkpoint holds (see `diffkit.train_loop.write_checkpoint`).
    """
    train = config.train
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM))  # the same initial weights on every process
    network = Autoencoder(config.model)
    model, optimizer = fabric.setup(network, make_optimizer(network, train))
    noise = torch.Generator(device=fabric.device).manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank))
    batches = ShardedBatches(dataset, train.batch_size, train.seed, fabric.global_rank, fabric.world_size,
                             fabric.device)
    run = AutoencoderRun(fabric, config, run_dir, network, model, optimizer, batches, noise, budget=Budget(train))
    if not resume:
        return run, []
    state = load_state(run_dir / STATE_FILE, required=STATE_KEYS)
    restore_progress(run, state)
    network.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if not restore_random_states(state["random"], fabric.global_rank, fabric.world_size, noise, fabric.device):
        noise.manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank, run.step))
    return run, state.get("log_rows", [])


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
                      dataset: TrainingImages | None = None, launch: Launch = Launch(), name: str = "autoencoder",
                      quiet: bool = False, extend_budget: bool = False) -> TrainResult:
    """Train (or with resume=True continue) the autoencoder run in `run_dir` until a budget or a signal stops it.

    The run directory is locked while training and while the latent scale is measured, and budgets are resumed or
    extended (`extend_budget`), as for `diffkit.train`.
    """
    fabric = make_fabric(config, launch)
    fabric.launch()
    if dataset is None:
        dataset = load_in_rank_order(fabric, config)
    config = resolve_autoencoder_config(config, dataset)
    run_dir, lock = prepare_run_dir(fabric, config, run_dir, name, resume, fixed=FIXED_SECTIONS)
    try:
        run, state_rows = setup_autoencoder_run(fabric, config, dataset, run_dir, resume)
        run.quiet = quiet
        if resume:
            continue_budget(run, extend_budget)
        start_log(run, state_rows, name, resume, COLUMNS)
        with StopRequest() as stop:
            result = training_loop(run, stop, AUTOENCODER_PARTS)
        if result.stopped_by in ("max_steps", "max_minutes") and fabric.is_global_zero:
            measured = measure_and_save_scale(run)
            print(f"diffkit: latent scale {measured['scale_factor']:.4f} (latent std {measured['latent_std']:.4f} "
                  f"over {measured['images']} training images) in {run_dir}", flush=True)
        return result
    finally:
        if lock is not None:
            lock.release()


def compute_loss(run: AutoencoderRun) -> AutoencoderLoss:
    """L1 + KL on this process's shard of the step's batch."""
    x, _ = run.batches.batch(run.step)  # (B_local, C, H, W)
    return autoencoder_loss(run.model, x, run.config.train.kl_weight, run.noise)


def _loss_and_parts(run: AutoencoderRun) -> tuple[torch.Tensor, tuple[float, float]]:
    """The loss to step on, and this process's L1 and KL for the log row."""
    parts = compute_loss(run)
    return parts.loss, (parts.l1.item(), parts.kl.item())


def optimizer_step(run: AutoencoderRun, loss: torch.Tensor) -> float:
    """Backward, clip, AdamW step at this step's learning rate (no EMA); returns the gradient norm."""
    train = run.config.train
    grad_norm = apply_gradients(run.fabric, run.model, run.optimizer, loss,
                                learning_rate(run.step, train, run.budget.plan), train.grad_clip)
    if math.isfinite(grad_norm):
        run.step += 1
    return grad_norm


# The autoencoder's pieces of the shared loop: its loss parts in the log, its weights in model.safetensors and
# originals beside reconstructions as the grid.
AUTOENCODER_PARTS = LoopParts(
    loss=_loss_and_parts, step=optimizer_step, columns=lambda run, means: {"l1": means[1], "kl": means[2]},
    checkpoint=lambda run: write_checkpoint(run, run.network), grid=lambda run, final: write_reconstructions(run),
    grid_name="reconstructions")
