"""The diffusion model's training (DDPM Algorithm 1 with the usual engineering), top to bottom, on Lightning Fabric.

Fabric supplies the devices, precision, multi-process data parallelism and launching (one process on a laptop,
gloo processes on a CPU, N GPUs x M nodes); the loop is ours (`diffkit.train_loop`, shared with the autoencoder's
trainer): AdamW with linear warm-up and cosine decay, gradient clipping, periodic checkpoints / sample grids /
metrics, budgets in steps and minutes that plan the learning rate (`diffkit.budget`), and a clean stop on
SIGINT/SIGTERM. This module holds what is the diffusion model's own: the config checks, the network with its EMA
weights and exact resume, the loss, the sample grids, and `train`. Only rank 0 writes files; every process draws
its shard of each batch.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric import Fabric
from torch import Tensor

from diffkit.acceleration import compiled, use_channels_last
from diffkit.budget import Budget
from diffkit.bundle import Bundle, WEIGHTS_FILE, save_weights, schedule_of, weight_differences
from diffkit.checkpoint import load_state, restore_random_states, write_failure
from diffkit.config import Config
from diffkit.ema import EMA
from diffkit.encoders import LatentEncoder
from diffkit.errors import DiffkitError
from diffkit.guidance import drop_labels
from diffkit.images import save_grid
from diffkit.latent_model import (
    autoencoder_source, encode_in_rank_order, eps_amplification_warning, is_latent, resolve_latent)
from diffkit.loss import diffusion_loss
from diffkit.nn.unet import UNet
from diffkit.optimizer import learning_rate, make_optimizer
from diffkit.run_directory import CONFIG_FILE, SAMPLES_DIR, STATE_FILE, prepare_run_dir
from diffkit.run_log import MetricsLog
from diffkit.schedule import Schedule
from diffkit.seeds import NOISE_STREAM, SAMPLE_STREAM, TORCH_STREAM, derive_seed
from diffkit.stop_request import StopRequest
from diffkit.text.captions import CaptionTable
from diffkit.train_data import ShardedBatches, TrainingImages
# Launch and TrainResult are part of this module's API (`from diffkit.train import Launch, train`).
from diffkit.train_loop import (Launch, LoopParts, TrainResult, apply_gradients, checked_image_size, continue_budget,
                                load_in_rank_order, make_fabric, restore_progress, start_log, training_loop,
                                write_checkpoint)


@dataclass
class Run:
    """Everything the loop touches, built once by `setup_run`."""

    fabric: Fabric
    config: Config
    run_dir: Path
    network: UNet  # the plain module (shares its parameters with `model`)
    model: torch.nn.Module  # what Fabric wrapped (DDP, precision, maybe compiled)
    optimizer: torch.optim.Optimizer
    ema: EMA
    schedule: Schedule
    batches: ShardedBatches
    noise: torch.Generator  # t, eps and label dropout of this process
    captions: CaptionTable | None = None  # text models: each label's cached caption embedding
    encoder: LatentEncoder | None = None  # latent models: decodes the sample grids (training never runs it)
    budget: Budget | None = None  # the learning-rate plan and time budget (restored from state.ckpt)
    step: int = 0
    elapsed_seconds: float = 0.0  # training time over all sessions
    saved_step: int | None = None  # the step state.ckpt holds (None before the first checkpoint)
    log: MetricsLog | None = None  # rank 0 only
    quiet: bool = False  # no progress bar or status lines


def resolve_config(config: Config, dataset: TrainingImages) -> Config:
    """The config with data.size filled in from the dataset, after checking the model fits the data (a latent
    model's channels and size were checked against its autoencoder by `latent_model.resolve_latent`)."""
    size = int(dataset.images.shape[2]) if is_latent(config) else checked_image_size(config, dataset)
    classes = config.model.num_classes
    if classes and dataset.num_classes != classes:
        raise DiffkitError(f"model.num_classes={classes} but the dataset has {dataset.num_classes} classes; "
                           f"set model.num_classes={dataset.num_classes} (or 0 for an unconditional model).")
    return resolve_text(dataclasses.replace(config, data=dataclasses.replace(config.data, size=size)))


def resolve_text(config: Config) -> Config:
    """A text model's config with the encoder's SHA-256 recorded; a run resumed under other weights is refused."""
    if config.text.captions == "none":
        return config
    from diffkit.text.encoder import encoder_digest

    digest = encoder_digest(config.text.encoder)
    recorded = config.text.encoder_sha256
    if recorded not in (None, digest):
        raise DiffkitError(f"The run was trained with {config.text.encoder} weights {recorded[:12]}... but the "
                           f"installed ones are {digest[:12]}...; reinstall the encoder the run used.")
    return dataclasses.replace(config, text=dataclasses.replace(config.text, encoder_sha256=digest))


def load_captions(fabric: Fabric, config: Config, dataset: TrainingImages,
                  quiet: bool = False) -> CaptionTable | None:
    """The cached caption embeddings of a text model's classes (rank 0 encodes them if needed, then the rest read)."""
    if config.text.captions == "none":
        return None
    from diffkit.data.dataset import resolve_data_dir
    from diffkit.text.captions import caption_table, dataset_captions

    captions = dataset_captions(dataset, config.text.captions)
    text, directory = config.text, resolve_data_dir(config.data.data_dir)
    log = print if fabric.is_global_zero and not quiet else (lambda message: None)
    table = caption_table(captions, text.encoder, text.max_tokens, directory, log) if fabric.is_global_zero else None
    fabric.barrier()
    if table is None:
        table = caption_table(captions, text.encoder, text.max_tokens, directory)
    return table.to(fabric.device)


def setup_run(fabric: Fabric, config: Config, dataset: TrainingImages, run_dir: Path,
              resume: bool) -> tuple[Run, list[dict]]:
    """Build network, EMA, optimizer and data shards on this process; restore state.ckpt when resuming.

    Also returns the metrics rows the checkpoint holds (see `checkpoint`).
    """
    train = config.train
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM))  # the same initial weights on every process
    network = UNet(config.model)
    if train.channels_last:  # before the EMA copy, so the average (and the grids drawn from it) is channels-last too
        use_channels_last(network)
    ema = EMA(network, train.ema_decay, train.ema_warmup, train.ema_sigma_rel)
    optimizer = make_optimizer(network, train)
    model = compiled(network, train.compile)  # after the copy: the EMA module is never compiled
    model, optimizer = fabric.setup(model, optimizer)
    ema.module.to(fabric.device)
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM, fabric.global_rank))  # dropout differs per process
    noise = torch.Generator(device=fabric.device).manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank))
    batches = ShardedBatches(dataset, train.batch_size, train.seed, fabric.global_rank, fabric.world_size,
                             fabric.device)
    run = Run(fabric, config, run_dir, network, model, optimizer, ema, schedule_of(config).to(fabric.device),
              batches, noise, budget=Budget(train))
    if not resume:
        return run, []
    state = load_state(run_dir / STATE_FILE)
    restore_run(run, state)
    return run, state.get("log_rows", [])


def restore_run(run: Run, state: dict) -> None:
    """Load step, budget, weights, EMA, optimizer and random states saved by `checkpoint`."""
    restore_progress(run, state)
    _check_same_model(run, state)
    run.network.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    fabric = run.fabric
    if not restore_random_states(state["random"], fabric.global_rank, fabric.world_size, run.noise, fabric.device):
        # Another process count: reseed from the step, so the run continues (not bit-exactly).
        run.noise.manual_seed(derive_seed(run.config.train.seed, NOISE_STREAM, fabric.global_rank, run.step))
        torch.manual_seed(derive_seed(run.config.train.seed, TORCH_STREAM, fabric.global_rank, run.step))
        if fabric.is_global_zero:
            print(f"diffkit: the checkpoint came from {state['random']['torch'].shape[0]} processes, this run has "
                  f"{fabric.world_size}; random streams were reseeded, so it is not a bit-exact continuation.")


def _check_same_model(run: Run, state: dict) -> None:
    """Refuse a state.ckpt whose weights do not fit the network config.json describes, naming what differs."""
    differences = weight_differences(run.network.state_dict(), state["model"])
    if not differences:
        return
    saved = state["config"].get("model", {}) if isinstance(state.get("config"), dict) else {}
    keys = [f"model.{key}={saved[key]!r} (config.json: {value!r})" for key, value in run.config.model.to_dict().items()
            if key in saved and saved[key] != value]
    what = f"it was trained with {', '.join(keys)}" if keys else f"weights differ: {'; '.join(differences)}"
    raise DiffkitError(f"{run.run_dir / STATE_FILE} holds a different model than {run.run_dir / CONFIG_FILE} ({what}); "
                       "put the checkpoint's values back into config.json's [model] section, then resume.")


def checkpoint(run: Run) -> None:
    """Write state.ckpt (with EMA), then model.safetensors (the EMA weights), config.json and the logged rows."""
    write_checkpoint(run, run.ema.module, ema=run.ema.state_dict())


def write_samples(run: Run, final: bool = False) -> Path:
    """Draw the config's sample grid from the EMA weights (fixed seed, so grids are comparable over time)."""
    sample = run.config.sample
    if final and not run.quiet:  # the bar sits at 100% meanwhile: say what is happening
        print(f"diffkit: drawing the final sample grid ({sample.n} images, {sample.sampler}, {sample.steps} steps)...",
              file=sys.stderr, flush=True)
    bundle = Bundle(run.ema.module, run.schedule, run.config, run.encoder)
    images = bundle.sample(sample.n, seed=derive_seed(sample.seed, SAMPLE_STREAM))
    return save_grid(images, run.run_dir / SAMPLES_DIR / f"step_{run.step:07d}.png")


def compute_loss(run: Run) -> Tensor:
    """DDPM Algorithm 1 on this process's shard of the step's batch (labels dropped for guidance)."""
    x0, labels = run.batches.batch(run.step)  # (B_local, C, H, W), (B_local,)
    y = None
    if run.config.model.num_classes:
        y = drop_labels(labels, run.config.train.p_uncond, run.network.null_label, run.noise)
    elif run.captions is not None:  # text: the label's cached caption, dropped to the learned null text
        y = drop_labels(run.captions.condition(labels), run.config.train.p_uncond, None, run.noise)
    diffusion = run.config.diffusion
    return diffusion_loss(run.model, run.schedule, x0, y, generator=run.noise, prediction=diffusion.prediction,
                          min_snr_gamma=diffusion.min_snr_gamma)


def optimizer_step(run: Run, loss: Tensor) -> float:
    """Backward, clip, AdamW step at this step's learning rate, EMA update; returns the gradient norm."""
    train = run.config.train
    grad_norm = apply_gradients(run.fabric, run.model, run.optimizer, loss,
                                learning_rate(run.step, train, run.budget.plan), train.grad_clip)
    if not math.isfinite(grad_norm):
        return grad_norm  # the caller stops the run; the weights were not touched
    run.ema.update(run.network)
    run.step += 1
    return grad_norm


def train(config: Config, run_dir: str | Path | None = None, *, resume: bool = False,
          dataset: TrainingImages | None = None, launch: Launch = Launch(), name: str = "run",
          quiet: bool = False, extend_budget: bool = False) -> TrainResult:
    """Train (or with resume=True continue) the run in `run_dir` until a budget or a signal stops it.

    Seeds the global torch RNG (network initialisation and dropout come from it); `dataset` replaces the
    config's data section (any object with uint8 `images`, int64 `labels` and `num_classes`). The run directory
    is locked while training; `quiet` turns off the progress bar and status lines (errors still show). A resumed
    run continues the checkpoint's budget and plan; `extend_budget` (the CLI's --max-minutes on resume) makes
    train.max_minutes a new budget from now instead (see `budget.Budget.new_budget`).
    """
    fabric = make_fabric(config, launch)
    fabric.launch()
    source = autoencoder_source(config, run_dir, resume) if is_latent(config) else None  # before the slow data
    if dataset is None:
        dataset = load_in_rank_order(fabric, config)
    encoder = None
    if source is not None:
        config, encoder = resolve_latent(config, dataset.images, source)
        warning = eps_amplification_warning(config)
        if warning and fabric.is_global_zero and not quiet:
            print(warning, flush=True)
    config = resolve_config(config, dataset)
    run_dir, lock = prepare_run_dir(fabric, config, run_dir, name, resume)
    try:
        if encoder is not None:
            dataset = encode_in_rank_order(fabric, config, encoder, dataset, source, run_dir, quiet)
        run, state_rows = setup_run(fabric, config, dataset, run_dir, resume)
        run.quiet, run.encoder = quiet, encoder
        run.captions = load_captions(fabric, config, dataset, quiet)
        if resume:
            continue_budget(run, extend_budget)
            if fabric.is_global_zero:  # a damaged bundle is rewritten from the state it was made from
                _write_or_explain(run, lambda: save_weights(run.ema.module, run_dir / WEIGHTS_FILE), WEIGHTS_FILE)
        start_log(run, state_rows, name, resume)
        with StopRequest() as stop:
            return training_loop(run, stop, DIFFUSION_PARTS)
    finally:
        if lock is not None:
            lock.release()


def _write_or_explain(run: Run, write, name: str) -> None:
    """Run a file write; a full disk or another OS error becomes the one sentence of `write_failure`."""
    try:
        write()
    except OSError as error:
        raise write_failure(error, run.run_dir / name, run.saved_step) from None


def _diffusion_columns(run: Run, means: tuple[float, ...]) -> dict[str, float]:
    """The diffusion row's own column: the EMA decay of the last update."""
    return {"ema_decay": run.ema.decay_at(run.ema.updates - 1)}


DIFFUSION_PARTS = LoopParts(loss=lambda run: (compute_loss(run), ()), step=optimizer_step,
                            columns=_diffusion_columns, checkpoint=checkpoint,
                            grid=lambda run, final: write_samples(run, final=final))
