"""The loop every trainer runs (the diffusion model's in `diffkit.train`, the autoencoder's in
`diffkit.train_autoencoder`), with what surrounds it: the Fabric launch, the resumed budget, the start-up log,
one all-reduce per step, gradient steps, periodic and final files and the checkpoint write order.

A trainer plugs its loss, optimizer step, log columns, checkpoint and grid into `training_loop` as a `LoopParts`;
its run object carries the fields `TrainingRun` names. Only rank 0 writes files other than state.ckpt.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from lightning.fabric import Fabric
from torch import Tensor
from tqdm import tqdm

from diffkit.allocator import configure_allocator
from diffkit.budget import Budget
from diffkit.bundle import WEIGHTS_FILE, save_weights
from diffkit.checkpoint import save_training_state, write_failure
from diffkit.config import Config, save_config
from diffkit.errors import DiffkitError
from diffkit.precision import resolve_precision
from diffkit.progress import step_bar
from diffkit.run_directory import CONFIG_FILE, STATE_FILE
from diffkit.run_log import COLUMNS, MetricsLog
from diffkit.stop_request import StopRequest
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


class TrainingRun(Protocol):
    """The fields of a trainer's run that the loop and the checkpoint read and advance."""

    fabric: Fabric
    config: Any  # the trainer's config: .train, .data, .model and to_dict()
    run_dir: Path
    network: torch.nn.Module  # the plain module, whose weights state.ckpt holds
    model: torch.nn.Module  # what Fabric wrapped
    optimizer: torch.optim.Optimizer
    batches: ShardedBatches
    noise: torch.Generator
    budget: Budget | None
    step: int
    elapsed_seconds: float
    saved_step: int | None
    log: MetricsLog | None
    quiet: bool


@dataclass(frozen=True)
class LoopParts:
    """What one kind of training plugs into `training_loop` (the diffusion model's: `train.DIFFUSION_PARTS`)."""

    loss: Callable  # run -> (loss tensor, this process's extra numbers for the log row: a tuple of floats)
    step: Callable  # (run, loss) -> gradient norm; advances run.step unless the norm is non-finite
    columns: Callable  # (run, interval means of (loss, *extras)) -> the row's own columns beyond the shared ones
    checkpoint: Callable  # run -> None; every process calls it
    grid: Callable  # (run, final) -> the PNG written; rank 0 only
    grid_name: str = "samples"  # what the grid shows, for the progress bar


def make_fabric(config: Config, launch: Launch) -> Fabric:
    """A Fabric for `launch` in train.precision (auto: see precision.py); a bad device request is a DiffkitError.

    Every trainer starts here, so this is also where the heap is told to keep freed activations (allocator.py)."""
    configure_allocator()
    processes = launch.devices * launch.num_nodes
    try:
        return Fabric(accelerator=launch.accelerator, devices=launch.devices, num_nodes=launch.num_nodes,
                      strategy="ddp" if processes > 1 else "auto",
                      precision=resolve_precision(config.train.precision, launch.accelerator).fabric)
    except (ValueError, RuntimeError, TypeError) as error:
        raise DiffkitError(f"Cannot run on accelerator={launch.accelerator} devices={launch.devices} "
                           f"num_nodes={launch.num_nodes} ({error}); change those flags.") from error


def load_in_rank_order(fabric: Fabric, config: Config) -> TrainingImages:
    """Rank 0 loads (and caches) the dataset first, then the others read the cache."""
    dataset = load_training_images(config.data) if fabric.is_global_zero else None
    fabric.barrier()
    return dataset if dataset is not None else load_training_images(config.data)


def checked_image_size(config, dataset: TrainingImages) -> int:
    """The dataset's image size, after checking model.in_channels and data.size of any trainer's config agree."""
    channels, size = int(dataset.images.shape[1]), int(dataset.images.shape[2])
    if config.model.in_channels != channels:
        raise DiffkitError(f"The dataset has {channels}-channel images but model.in_channels="
                           f"{config.model.in_channels}; set model.in_channels={channels}.")
    if config.data.size not in (None, size):
        raise DiffkitError(f"The dataset's images are {size} px but data.size={config.data.size}.")
    return size


def continue_budget(run: TrainingRun, extend: bool) -> None:
    """A resumed run's budget: `extend` (the CLI's --max-minutes on resume) makes train.max_minutes a new budget from
    now; a run already at train.max_steps or out of time would train nothing (or one step): say so instead."""
    if extend:
        run.budget.extend(run.step)
    max_steps = run.config.train.max_steps
    if max_steps is not None and run.step >= max_steps:
        raise DiffkitError(f"{run.run_dir} is already at step {run.step}, which reaches train.max_steps={max_steps}; "
                           f"pass --max-steps above {run.step} to train on.")
    if run.budget is not None and run.budget.exhausted():
        raise DiffkitError(f"{run.run_dir} has spent its time budget of {run.budget.budget_seconds / 60:.3g} minutes "
                           "(train.max_minutes); pass --max-minutes M to train M more minutes.")


def restore_progress(run: TrainingRun, state: dict) -> None:
    """Take a state.ckpt's step, training time and budget, after checking it was trained on this many images."""
    if state["dataset_length"] != run.batches.count:
        raise DiffkitError(f"The checkpoint was trained on {state['dataset_length']} images but the dataset now "
                           f"has {run.batches.count}; resume with the same data.")
    run.step, run.elapsed_seconds = int(state["step"]), float(state["elapsed_seconds"])
    run.saved_step = run.step
    run.budget = Budget(run.config.train, run.step, state.get("budget"))


def start_log(run: TrainingRun, state_rows: list[dict], name: str, resumed: bool,
              columns: tuple[str, ...] = COLUMNS) -> None:
    """On rank 0: open metrics.csv (with the rows state.ckpt carried, see `write_checkpoint`), print the summary."""
    if run.fabric.is_global_zero:
        run.log = MetricsLog(run.run_dir, run.step, state_rows, columns)
        print(summary(run, name, resumed), flush=True)


def summary(run: TrainingRun, preset: str, resumed: bool) -> str:
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


def training_loop(run: TrainingRun, stop: StopRequest, parts: LoopParts) -> TrainResult:
    """Step until max_steps, max_minutes or a signal; checkpoint, draw grids and log on the way and at the end."""
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
            loss_value, nonfinite, stopping, clock = agree(fabric, loss, stop.signal_name is not None or out_of_time,
                                                           (seconds, *budget.periodic_seconds()))
            if nonfinite:
                raise DiffkitError(_nonfinite_message(run, f"loss became {loss_value}"))
            _follow_budget(budget, run.step, clock, progress, shown)
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


def agree(fabric: Fabric, loss: Tensor, stop: bool, clock: tuple[float, ...]
          ) -> tuple[float, bool, bool, tuple[float, ...]]:
    """(mean loss, any process non-finite, any process wants to stop, process 0's clock): one all-reduce per step.

    `clock` is the budget's (seconds, file seconds per kind). Every process plans from process 0's, so all set the
    same learning rate; process 0's, not the mean, because only it draws the sample grids the others wait for."""
    flags = torch.stack([loss.detach().float(), (~torch.isfinite(loss.detach())).float(),
                         torch.tensor(float(stop), device=loss.device)])
    if fabric.world_size == 1:  # this process's own clock, not rounded to float32
        mean_loss, nonfinite, stopping = flags.tolist()
        return mean_loss, nonfinite > 0, stopping > 0, clock
    own = torch.tensor(clock if fabric.global_rank == 0 else [0.0] * len(clock), dtype=torch.float64)
    summed = fabric.all_reduce(torch.cat([flags.cpu().double(), own]).to(loss.device), reduce_op="sum").tolist()
    mean_loss, nonfinite, stopping = summed[:3]
    return mean_loss / fabric.world_size, nonfinite > 0, stopping > 0, tuple(summed[3:])


def _follow_budget(budget: Budget, step: int, clock: tuple[float, ...], progress: tqdm, shown: bool) -> None:
    """Let a time budget re-plan from the agreed clock; print a new plan and move the bar's end to its horizon."""
    line = budget.observe(step, clock[0], clock[1:])
    if budget.timed and budget.plan.horizon is not None and progress.total != budget.plan.horizon:
        progress.total = budget.plan.horizon
        progress.refresh()
    if line is not None and shown:
        tqdm.write(line, file=sys.stdout)


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


def _periodic_files(run: TrainingRun, parts: LoopParts) -> None:
    """The checkpoint and the grid due at this step, if any, each timed on the budget's clock (see budget.py)."""
    train, budget = run.config.train, run.budget
    if run.step % train.checkpoint_every == 0:
        started = budget.clock()
        parts.checkpoint(run)
        budget.spent_on("checkpoint", budget.clock() - started)
    if train.sample_every and run.step % train.sample_every == 0 and run.fabric.is_global_zero:
        started = budget.clock()
        parts.grid(run, False)
        budget.spent_on("grid", budget.clock() - started)


def _final_files(run: TrainingRun, parts: LoopParts, progress: tqdm, finished: bool) -> None:
    """The last checkpoint (unless this step's is written) and, when a budget ended the run, the last grid."""
    if run.saved_step != run.step:
        parts.checkpoint(run)
    sample_every = run.config.train.sample_every
    if finished and sample_every and run.step % sample_every != 0 and run.fabric.is_global_zero:
        progress.set_description(f"drawing the final {parts.grid_name}")
        progress.refresh()
        parts.grid(run, True)


def write_checkpoint(run: TrainingRun, weights: torch.nn.Module, **extra_state) -> None:
    """Write state.ckpt, then `weights` as model.safetensors, config.json and the logged rows; every process calls
    this. `run` is any trainer's run (`train.Run` or the autoencoder's); `extra_state` joins the saved state.

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


def _log_row(run: TrainingRun, parts: LoopParts, progress: tqdm, interval: list[tuple[float, ...]], grad_norm: float,
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


def _nonfinite_message(run: TrainingRun, what: str) -> str:
    """The one sentence a NaN/inf loss or gradient ends the run with."""
    where = (f"the last checkpoint {run.run_dir / STATE_FILE} (step {run.saved_step}) is untouched"
             if run.saved_step is not None else "no checkpoint had been written yet")
    return (f"The training {what} at step {run.step + 1}; training stopped and {where}; "
            "lower train.lr or set train.grad_clip, then resume.")
