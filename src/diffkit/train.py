"""The training loop (DDPM Algorithm 1 with the usual engineering), top to bottom, on Lightning Fabric.

Fabric supplies the devices, precision, multi-process data parallelism and launching (one process on a laptop,
gloo processes on a CPU, N GPUs x M nodes); the loop is ours: AdamW with linear warm-up and cosine decay,
gradient clipping, EMA weights, periodic checkpoints / sample grids / metrics, budgets in steps and minutes
that plan the learning rate (`diffkit.budget`), and a clean stop on SIGINT/SIGTERM. Only rank 0 writes files;
every process draws its shard of each batch.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from lightning.fabric import Fabric
from torch import Tensor
from tqdm import tqdm

from diffkit.acceleration import compiled, use_channels_last
from diffkit.budget import Budget
from diffkit.bundle import Bundle, WEIGHTS_FILE, save_weights, schedule_of, weight_differences
from diffkit.checkpoint import load_state, restore_random_states, save_training_state, write_failure
from diffkit.config import Config, save_config
from diffkit.ema import EMA
from diffkit.encoders import LatentEncoder
from diffkit.precision import resolve_precision
from diffkit.errors import DiffkitError
from diffkit.guidance import drop_labels
from diffkit.images import save_grid
from diffkit.latent_model import autoencoder_source, encode_in_rank_order, is_latent, resolve_latent
from diffkit.loss import diffusion_loss
from diffkit.nn.unet import UNet
from diffkit.optimizer import learning_rate, make_optimizer
from diffkit.progress import step_bar
from diffkit.run_directory import CONFIG_FILE, SAMPLES_DIR, STATE_FILE, prepare_run_dir
from diffkit.run_log import MetricsLog
from diffkit.schedule import Schedule
from diffkit.seeds import NOISE_STREAM, SAMPLE_STREAM, TORCH_STREAM, derive_seed
from diffkit.stop_request import StopRequest
from diffkit.text.captions import CaptionTable
from diffkit.train_data import ShardedBatches, TrainingImages, load_training_images


@dataclass(frozen=True)
class Launch:
    """Where to run: passed straight to Fabric (strategy ddp whenever there is more than one process)."""

    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1


@dataclass(frozen=True)
class TrainResult:
    """How a call to `train` ended."""

    run_dir: Path
    step: int
    stopped_by: str  # max_steps | max_minutes | SIGINT | SIGTERM
    loss: float | None  # the last step's loss (mean over processes)


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


def make_fabric(config: Config, launch: Launch) -> Fabric:
    """A Fabric for `launch` in train.precision (auto: see precision.py); a bad device request is a DiffkitError."""
    processes = launch.devices * launch.num_nodes
    try:
        return Fabric(accelerator=launch.accelerator, devices=launch.devices, num_nodes=launch.num_nodes,
                      strategy="ddp" if processes > 1 else "auto",
                      precision=resolve_precision(config.train.precision, launch.accelerator).fabric)
    except (ValueError, RuntimeError, TypeError) as error:
        raise DiffkitError(f"Cannot run on accelerator={launch.accelerator} devices={launch.devices} "
                           f"num_nodes={launch.num_nodes} ({error}); change those flags.") from error


def checked_image_size(config, dataset: TrainingImages) -> int:
    """The dataset's image size, after checking model.in_channels and data.size of any trainer's config agree."""
    channels, size = int(dataset.images.shape[1]), int(dataset.images.shape[2])
    if config.model.in_channels != channels:
        raise DiffkitError(f"The dataset has {channels}-channel images but model.in_channels="
                           f"{config.model.in_channels}; set model.in_channels={channels}.")
    if config.data.size not in (None, size):
        raise DiffkitError(f"The dataset's images are {size} px but data.size={config.data.size}.")
    return size


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
    run.saved_step = run.step
    return run, state.get("log_rows", [])


def restore_run(run: Run, state: dict) -> None:
    """Load weights, EMA, optimizer, step and random states saved by `checkpoint`."""
    if state["dataset_length"] != run.batches.count:
        raise DiffkitError(f"The checkpoint was trained on {state['dataset_length']} images but the dataset now "
                           f"has {run.batches.count}; resume with the same data.")
    _check_same_model(run, state)
    run.network.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step, run.elapsed_seconds = int(state["step"]), float(state["elapsed_seconds"])
    run.budget = Budget(run.config.train, run.step, state.get("budget"))
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


def write_checkpoint(run, weights: torch.nn.Module, **extra_state) -> None:
    """Write state.ckpt, then `weights` as model.safetensors, config.json and the logged rows; every process calls
    this. `run` is any trainer's run (a `Run` or the autoencoder's); `extra_state` joins the saved state.

    The order keeps every file at or behind state.ckpt: if a write fails (a full disk), the files already
    written describe the new checkpoint and the rest still describe the previous one.
    """
    state = {
        "config": run.config.to_dict(), "step": run.step, "epoch": run.batches.position(run.step)[0],
        "dataset_length": run.batches.count, "elapsed_seconds": run.elapsed_seconds,
        "model": run.network.state_dict(), "optimizer": run.optimizer.state_dict(), **extra_state,
        "budget": run.budget.state_dict() if run.budget is not None else None,
        # The rows metrics.csv gets next: a process killed before appending them loses none (resume adds them).
        "log_rows": list(run.log.pending) if run.log is not None else [],
    }
    path = run.run_dir / STATE_FILE
    try:
        save_training_state(run.fabric, path, state, run.noise)
        if run.fabric.is_global_zero:
            path = run.run_dir / WEIGHTS_FILE
            save_weights(weights, path)
            path = run.run_dir / CONFIG_FILE
            save_config(run.config, path)  # a resumed run's new train.* values, now held by a checkpoint
            path = run.log.path
            run.log.commit()
    except OSError as error:
        raise write_failure(error, path, run.step if path.name != STATE_FILE else run.saved_step) from None
    run.saved_step = run.step


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


def agree(fabric: Fabric, loss: Tensor, stop: bool, seconds: float) -> tuple[float, bool, bool, float]:
    """(mean loss, any process non-finite, any process wants to stop, mean budget seconds): one all-reduce per step.

    The budget plans from the mean of the processes' clocks, so every process sets the same learning rate."""
    flags = torch.stack([loss.detach().float(), (~torch.isfinite(loss.detach())).float(),
                         torch.tensor(float(stop), device=loss.device),
                         torch.tensor(seconds, dtype=torch.float32, device=loss.device)])
    if fabric.world_size == 1:  # this process's own seconds, not rounded to float32
        mean_loss, nonfinite, stopping, _ = flags.tolist()
        return mean_loss, nonfinite > 0, stopping > 0, seconds
    mean_loss, nonfinite, stopping, total_seconds = fabric.all_reduce(flags, reduce_op="sum").tolist()
    return mean_loss / fabric.world_size, nonfinite > 0, stopping > 0, total_seconds / fabric.world_size


def apply_gradients(fabric: Fabric, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: Tensor,
                    lr: float, grad_clip: float | None) -> float:
    """Backward, clip, optimizer step at `lr`; returns the gradient norm (non-finite: no step is taken)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    fabric.backward(loss)
    # The norm is always measured (max_norm=inf clips nothing): a finite loss can still have inf/NaN gradients
    # (bf16 overflow), and AdamW would write them into the weights and the next checkpoint.
    max_norm = grad_clip if grad_clip is not None else float("inf")
    grad_norm = float(fabric.clip_gradients(model, optimizer, max_norm=max_norm, error_if_nonfinite=False))
    if math.isfinite(grad_norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


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
    config = resolve_config(config, dataset)
    run_dir, lock = prepare_run_dir(fabric, config, run_dir, name, resume)
    try:
        if encoder is not None:
            dataset = encode_in_rank_order(fabric, config, encoder, dataset, source, run_dir, quiet)
        run, state_rows = setup_run(fabric, config, dataset, run_dir, resume)
        run.quiet, run.encoder = quiet, encoder
        run.captions = load_captions(fabric, config, dataset, quiet)
        if resume:
            if extend_budget:
                run.budget.extend(run.step)
            check_steps_left(run)
        if fabric.is_global_zero:
            if resume:  # a damaged bundle is rewritten from the state it was made from
                _write_or_explain(run, lambda: save_weights(run.ema.module, run_dir / WEIGHTS_FILE), WEIGHTS_FILE)
            run.log = MetricsLog(run_dir, run.step, state_rows)
            print(summary(run, name, resume), flush=True)
        with StopRequest() as stop:
            return training_loop(run, stop)
    finally:
        if lock is not None:
            lock.release()


def check_steps_left(run: Run) -> None:
    """A resumed run that is already at train.max_steps, or has spent its time budget, would train nothing (or one
    step): say so instead."""
    max_steps = run.config.train.max_steps
    if max_steps is not None and run.step >= max_steps:
        raise DiffkitError(f"{run.run_dir} is already at step {run.step}, which reaches train.max_steps={max_steps}; "
                           f"pass --max-steps above {run.step} to train on.")
    if run.budget is not None and run.budget.exhausted():
        raise DiffkitError(f"{run.run_dir} has spent its time budget of {run.budget.budget_seconds / 60:.3g} minutes "
                           "(train.max_minutes); pass --max-minutes M to train M more minutes.")


def _write_or_explain(run: Run, write, name: str) -> None:
    """Run a file write; a full disk or another OS error becomes the one sentence of `write_failure`."""
    try:
        write()
    except OSError as error:
        raise write_failure(error, run.run_dir / name, run.saved_step) from None


def summary(run: Run, preset: str, resumed: bool) -> str:
    """The few lines printed when training starts (the full config is in the run's config.json)."""
    config, train = run.config, run.config.train
    parameters = sum(parameter.numel() for parameter in run.network.parameters())
    budget = " and ".join(part for part in (
        f"{train.max_steps} steps" if train.max_steps is not None else "",
        f"{train.max_minutes:g} minutes" if train.max_minutes is not None else "") if part) or "no limit (Ctrl-C stops)"
    start = f"resuming at step {run.step}" if resumed else f"preset {preset}"
    precision = resolve_precision(train.precision, run.fabric.device.type)
    latent = getattr(run, "encoder", None) is not None  # the autoencoder's own run has no encoder
    space = f", as {'x'.join(map(str, run.batches.images.shape[1:]))} latents" if latent else ""
    return (f"diffkit: {start}; dataset {config.data.dataset} ({run.batches.count} images, {config.data.size} px"
            f"{space}); "
            f"{parameters / 1e6:.2f} M parameters; budget {budget}\n"
            f"diffkit: precision {precision.name} ({precision.reason})\n"
            f"diffkit: run directory {run.run_dir} (full config in {run.run_dir / CONFIG_FILE})")


def load_in_rank_order(fabric: Fabric, config: Config) -> TrainingImages:
    """Rank 0 loads (and caches) the dataset first, then the others read the cache."""
    dataset = load_training_images(config.data) if fabric.is_global_zero else None
    fabric.barrier()
    return dataset if dataset is not None else load_training_images(config.data)


@dataclass(frozen=True)
class LoopParts:
    """What one kind of training plugs into `training_loop` (the diffusion model's: `DIFFUSION_PARTS`)."""

    loss: Callable  # run -> (loss tensor, this process's extra numbers for the log row: a tuple of floats)
    step: Callable  # (run, loss) -> gradient norm; advances run.step unless the norm is non-finite
    columns: Callable  # (run, interval means of (loss, *extras)) -> the row's own columns beyond the shared ones
    checkpoint: Callable  # run -> None; every process calls it
    grid: Callable  # (run, final) -> the PNG written; rank 0 only
    grid_name: str = "samples"  # what the grid shows, for the progress bar


def training_loop(run: Run, stop: StopRequest, parts: LoopParts | None = None) -> TrainResult:
    """Step until max_steps, max_minutes or a signal; checkpoint, draw grids and log on the way and at the end."""
    parts = parts or DIFFUSION_PARTS
    fabric, train = run.fabric, run.config.train
    budget = run.budget = run.budget or Budget(train, run.step)
    budget.start_session(run.step)
    shown = fabric.is_global_zero and not run.quiet
    # The bar goes to stderr, and only to a terminal: logs and pipes get the metrics.csv rows instead.
    progress = step_bar(budget.plan.horizon if budget.timed else train.max_steps, run.step, shown=shown)
    if shown and (not budget.timed or budget.seconds_per_step is not None):  # else: once the speed is measured
        tqdm.write(budget.describe(), file=sys.stdout)
    interval_started = time.monotonic()
    interval: list[tuple[float, ...]] = []
    stopped_by, loss_value = None, None
    try:
        while stopped_by is None and (train.max_steps is None or run.step < train.max_steps):
            step_started = time.monotonic()
            loss, extras = parts.loss(run)
            seconds = budget.seconds()
            out_of_time = budget.out_of_time(seconds)
            loss_value, nonfinite, stopping, seconds = agree(fabric, loss, stop.signal_name is not None or out_of_time,
                                                             seconds)
            if nonfinite:
                raise DiffkitError(_nonfinite_message(run, f"loss became {loss_value}"))
            _follow_budget(budget, run.step, seconds, progress, shown)
            grad_norm = parts.step(run, loss)
            if not math.isfinite(grad_norm):
                raise DiffkitError(_nonfinite_message(run, f"gradient norm became {grad_norm}"))
            run.elapsed_seconds += time.monotonic() - step_started
            interval.append((loss_value, *extras))
            progress.update(1)
            if run.step % train.log_every == 0 and run.log is not None:
                _log_row(run, parts, progress, interval, grad_norm, time.monotonic() - interval_started)
                interval, interval_started = [], time.monotonic()
            _periodic_files(run, parts)
            if stopping:
                stopped_by = stop.signal_name or ("max_minutes" if out_of_time else "another process stopping")
        stopped_by = stopped_by or "max_steps"
        _final_files(run, parts, progress, finished=stopped_by in ("max_steps", "max_minutes"))
    finally:
        progress.close()
        if run.log is not None:
            run.log.close()
    if fabric.is_global_zero:
        print(f"diffkit: stopped by {stopped_by} at step {run.step}; the model is in {run.run_dir}", flush=True)
    return TrainResult(run.run_dir, run.step, stopped_by, loss_value)


def _follow_budget(budget: Budget, step: int, seconds: float, progress: tqdm, shown: bool) -> None:
    """Let a time budget re-plan from the agreed seconds; print a new plan and move the bar's end to its horizon."""
    line = budget.observe(step, seconds)
    if budget.timed and budget.plan.horizon is not None and progress.total != budget.plan.horizon:
        progress.total = budget.plan.horizon
        progress.refresh()
    if line is not None and shown:
        tqdm.write(line, file=sys.stdout)


def _periodic_files(run: Run, parts: LoopParts) -> None:
    """The checkpoint and the grid due at this step, if any."""
    train = run.config.train
    if run.step % train.checkpoint_every == 0:
        parts.checkpoint(run)
    if train.sample_every and run.step % train.sample_every == 0 and run.fabric.is_global_zero:
        parts.grid(run, False)


def _final_files(run: Run, parts: LoopParts, progress: tqdm, finished: bool) -> None:
    """The last checkpoint (unless this step's is written) and, when a budget ended the run, the last grid."""
    if run.saved_step != run.step:
        parts.checkpoint(run)
    sample_every = run.config.train.sample_every
    if finished and sample_every and run.step % sample_every != 0 and run.fabric.is_global_zero:
        progress.set_description(f"drawing the final {parts.grid_name}")
        progress.refresh()
        parts.grid(run, True)


def _log_row(run: Run, parts: LoopParts, progress: tqdm, interval: list[tuple[float, ...]], grad_norm: float,
             seconds: float) -> None:
    """One metrics.csv row of interval means (written with the next checkpoint); the bar's loss and images/s."""
    means = tuple(sum(values) / len(interval) for values in zip(*interval))
    images_per_second = len(interval) * run.config.train.batch_size / max(seconds, 1e-9)
    run.log.write({
        "step": run.step, "epoch": run.batches.position(run.step - 1)[0], "loss": means[0],
        "lr": run.optimizer.param_groups[0]["lr"], "grad_norm": grad_norm,
        "images_per_second": images_per_second, "elapsed_minutes": run.elapsed_seconds / 60,
        **parts.columns(run, means),
    })
    progress.set_postfix(loss=f"{means[0]:.4f}", images_per_second=f"{images_per_second:.0f}")


def _diffusion_columns(run: Run, means: tuple[float, ...]) -> dict[str, float]:
    """The diffusion row's own column: the EMA decay of the last update."""
    return {"ema_decay": run.ema.decay_at(run.ema.updates - 1)}


DIFFUSION_PARTS = LoopParts(loss=lambda run: (compute_loss(run), ()), step=optimizer_step,
                            columns=_diffusion_columns, checkpoint=checkpoint,
                            grid=lambda run, final: write_samples(run, final=final))


def _nonfinite_message(run: Run, what: str) -> str:
    """The one sentence a NaN/inf loss or gradient ends the run with."""
    where = (f"the last checkpoint {run.run_dir / STATE_FILE} (step {run.saved_step}) is untouched"
             if run.saved_step is not None else "no checkpoint had been written yet")
    return (f"The training {what} at step {run.step + 1}; training stopped and {where}; "
            "lower train.lr or set train.grad_clip, then resume.")
