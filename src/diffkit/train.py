"""The training loop (DDPM Algorithm 1 with the usual engineering), top to bottom, on Lightning Fabric.

Fabric supplies the devices, precision, multi-process data parallelism and launching (one process on a laptop,
gloo processes on a CPU, N GPUs x M nodes); the loop is ours: AdamW with linear warm-up and cosine decay,
gradient clipping, EMA weights, periodic checkpoints / sample grids / metrics, budgets in steps and minutes,
and a clean stop on SIGINT/SIGTERM. Only rank 0 writes files; every process draws its shard of each batch.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.fabric import Fabric
from torch import Tensor
from tqdm import tqdm

from diffkit.bundle import Bundle, WEIGHTS_FILE, save_weights, schedule_of
from diffkit.checkpoint import (SAMPLES_DIR, STATE_FILE, load_state, prepare_run_dir, restore_random_states,
                                save_training_state)
from diffkit.config import Config, TrainConfig, save_config
from diffkit.ema import EMA, ema_decay
from diffkit.errors import DiffkitError
from diffkit.guidance import drop_labels
from diffkit.images import save_grid
from diffkit.loss import diffusion_loss
from diffkit.nn.unet import UNet
from diffkit.run_log import MetricsLog
from diffkit.schedule import Schedule
from diffkit.train_data import (NOISE_STREAM, SAMPLE_STREAM, TORCH_STREAM, ShardedBatches, TrainingImages,
                                derive_seed, load_training_images)

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
    step: int = 0
    elapsed_seconds: float = 0.0  # training time over all sessions


def learning_rate(step: int, train: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to min_lr_ratio * lr at decay_steps (then flat)."""
    if step < train.warmup_steps:
        return train.lr * (step + 1) / train.warmup_steps
    horizon = train.decay_steps or train.max_steps
    if train.lr_schedule == "constant" or horizon is None or horizon <= train.warmup_steps:
        return train.lr
    progress = min((step - train.warmup_steps) / (horizon - train.warmup_steps), 1.0)
    ratio = train.min_lr_ratio + (1 - train.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return train.lr * ratio


def make_optimizer(network: torch.nn.Module, train: TrainConfig) -> torch.optim.AdamW:
    """AdamW that decays only weight matrices and kernels, not biases, norms or embeddings' 1-d scales."""
    decayed = [p for p in network.parameters() if p.ndim >= 2]
    plain = [p for p in network.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": train.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=(0.9, train.adam_beta2))


def make_fabric(config: Config, launch: Launch) -> Fabric:
    """A Fabric for `launch`, with bf16-mixed or 32-true precision; a bad device request is a DiffkitError."""
    processes = launch.devices * launch.num_nodes
    try:
        return Fabric(accelerator=launch.accelerator, devices=launch.devices, num_nodes=launch.num_nodes,
                      strategy="ddp" if processes > 1 else "auto",
                      precision="bf16-mixed" if config.train.bf16 else "32-true")
    except (ValueError, RuntimeError, TypeError) as error:
        raise DiffkitError(f"Cannot run on accelerator={launch.accelerator} devices={launch.devices} "
                           f"num_nodes={launch.num_nodes} ({error}); change those flags.") from error


def resolve_config(config: Config, dataset: TrainingImages) -> Config:
    """The config with data.size filled in from the dataset, after checking the model fits the data."""
    channels, size = int(dataset.images.shape[1]), int(dataset.images.shape[2])
    if config.model.in_channels != channels:
        raise DiffkitError(f"The dataset has {channels}-channel images but model.in_channels="
                           f"{config.model.in_channels}; set model.in_channels={channels}.")
    if config.data.size not in (None, size):
        raise DiffkitError(f"The dataset's images are {size} px but data.size={config.data.size}.")
    classes = config.model.num_classes
    if classes and dataset.num_classes != classes:
        raise DiffkitError(f"model.num_classes={classes} but the dataset has {dataset.num_classes} classes; "
                           f"set model.num_classes={dataset.num_classes} (or 0 for an unconditional model).")
    return dataclasses.replace(config, data=dataclasses.replace(config.data, size=size))


def setup_run(fabric: Fabric, config: Config, dataset: TrainingImages, run_dir: Path, resume: bool) -> Run:
    """Build network, EMA, optimizer and data shards on this process; restore state.ckpt when resuming."""
    train = config.train
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM))  # the same initial weights on every process
    network = UNet(config.model)
    ema = EMA(network, train.ema_decay, train.ema_warmup)
    optimizer = make_optimizer(network, train)
    model = torch.compile(network) if train.compile else network
    model, optimizer = fabric.setup(model, optimizer)
    ema.module.to(fabric.device)
    torch.manual_seed(derive_seed(train.seed, TORCH_STREAM, fabric.global_rank))  # dropout differs per process
    noise = torch.Generator(device=fabric.device).manual_seed(derive_seed(train.seed, NOISE_STREAM, fabric.global_rank))
    batches = ShardedBatches(dataset, train.batch_size, train.seed, fabric.global_rank, fabric.world_size,
                             fabric.device)
    run = Run(fabric, config, run_dir, network, model, optimizer, ema, schedule_of(config).to(fabric.device),
              batches, noise)
    if resume:
        restore_run(run, load_state(run_dir / STATE_FILE))
    return run


def restore_run(run: Run, state: dict) -> None:
    """Load weights, EMA, optimizer, step and random states saved by `checkpoint`."""
    if state["dataset_length"] != run.batches.count:
        raise DiffkitError(f"The checkpoint was trained on {state['dataset_length']} images but the dataset now "
                           f"has {run.batches.count}; resume with the same data.")
    run.network.load_state_dict(state["model"])
    run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.step, run.elapsed_seconds = int(state["step"]), float(state["elapsed_seconds"])
    fabric = run.fabric
    if not restore_random_states(state["random"], fabric.global_rank, fabric.world_size, run.noise, fabric.device):
        # Another process count: reseed from the step, so the run continues (not bit-exactly).
        run.noise.manual_seed(derive_seed(run.config.train.seed, NOISE_STREAM, fabric.global_rank, run.step))
        torch.manual_seed(derive_seed(run.config.train.seed, TORCH_STREAM, fabric.global_rank, run.step))
        if fabric.is_global_zero:
            print(f"diffkit: the checkpoint came from {state['random']['torch'].shape[0]} processes, this run has "
                  f"{fabric.world_size}; random streams were reseeded, so it is not a bit-exact continuation.")


def checkpoint(run: Run) -> None:
    """Write state.ckpt and model.safetensors (EMA) atomically; every process must call this."""
    state = {
        "config": run.config.to_dict(), "step": run.step, "epoch": run.batches.position(run.step)[0],
        "dataset_length": run.batches.count, "elapsed_seconds": run.elapsed_seconds,
        "model": run.network.state_dict(), "ema": run.ema.state_dict(), "optimizer": run.optimizer.state_dict(),
    }
    save_training_state(run.fabric, run.run_dir / STATE_FILE, state, run.noise)
    if run.fabric.is_global_zero:
        save_weights(run.ema.module, run.run_dir / WEIGHTS_FILE)


def write_samples(run: Run) -> Path:
    """Draw the config's sample grid from the EMA weights (fixed seed, so grids are comparable over time)."""
    sample = run.config.sample
    bundle = Bundle(run.ema.module, run.schedule, run.config)
    images = bundle.sample(sample.n, seed=derive_seed(sample.seed, SAMPLE_STREAM))
    return save_grid(images, run.run_dir / SAMPLES_DIR / f"step_{run.step:07d}.png")


def compute_loss(run: Run) -> Tensor:
    """DDPM Algorithm 1 on this process's shard of the step's batch (labels dropped for guidance)."""
    x0, labels = run.batches.batch(run.step)  # (B_local, C, H, W), (B_local,)
    y = None
    if run.config.model.num_classes:
        y = drop_labels(labels, run.config.train.p_uncond, run.network.null_label, run.noise)
    diffusion = run.config.diffusion
    return diffusion_loss(run.model, run.schedule, x0, y, generator=run.noise, prediction=diffusion.prediction,
                          min_snr_gamma=diffusion.min_snr_gamma)


def agree(fabric: Fabric, loss: Tensor, stop: bool) -> tuple[float, bool, bool]:
    """(mean loss, any process non-finite, any process wants to stop): one all-reduce per step."""
    flags = torch.stack([loss.detach().float(), (~torch.isfinite(loss.detach())).float(),
                         torch.tensor(float(stop), device=loss.device)])
    if fabric.world_size > 1:
        flags = fabric.all_reduce(flags, reduce_op="sum")
    mean_loss, nonfinite, stopping = flags.tolist()
    return mean_loss / fabric.world_size, nonfinite > 0, stopping > 0


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
    grad_norm = apply_gradients(run.fabric, run.model, run.optimizer, loss, learning_rate(run.step, train),
                                train.grad_clip)
    if not math.isfinite(grad_norm):
        return grad_norm  # the caller stops the run; the weights were not touched
    run.ema.update(run.network)
    run.step += 1
    return grad_norm


class StopRequest:
    """SIGINT/SIGTERM ask the loop to checkpoint and return; a second signal acts as usual (kills)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            self.previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def _handle(self, number: int, frame) -> None:
        self.signal_name = signal.Signals(number).name
        self._restore()

    def _restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous = {}

    def __exit__(self, *exception) -> None:
        self._restore()


def train(config: Config, run_dir: str | Path | None = None, *, resume: bool = False,
          dataset: TrainingImages | None = None, launch: Launch = Launch(), name: str = "run") -> TrainResult:
    """Train (or with resume=True continue) the run in `run_dir` until a budget or a signal stops it.

    Seeds the global torch RNG (network initialisation and dropout come from it); `dataset` replaces the
    config's data section (any object with uint8 `images`, int64 `labels` and `num_classes`).
    """
    fabric = make_fabric(config, launch)
    fabric.launch()
    if dataset is None:
        dataset = _load_in_rank_order(fabric, config)
    config = resolve_config(config, dataset)
    run_dir = prepare_run_dir(fabric, config, run_dir, name, resume)
    run = setup_run(fabric, config, dataset, run_dir, resume)
    if resume and fabric.is_global_zero:
        save_config(config, run_dir / "config.json")  # the new train.* / sample.* values, now that resume worked
    with StopRequest() as stop:
        return training_loop(run, stop, resumed=resume)


def _load_in_rank_order(fabric: Fabric, config: Config) -> TrainingImages:
    """Rank 0 loads (and caches) the dataset first, then the others read the cache."""
    dataset = load_training_images(config.data) if fabric.is_global_zero else None
    fabric.barrier()
    return dataset if dataset is not None else load_training_images(config.data)


def training_loop(run: Run, stop: StopRequest, resumed: bool) -> TrainResult:
    """Step until max_steps, max_minutes or a signal; checkpoint, sample and log on the way and at the end."""
    fabric, train = run.fabric, run.config.train
    log = MetricsLog(run.run_dir, run.step if resumed else None) if fabric.is_global_zero else None
    progress = tqdm(total=train.max_steps, initial=run.step, unit="step", dynamic_ncols=True,
                    disable=not fabric.is_global_zero)
    started = interval_started = time.monotonic()
    interval_losses: list[float] = []
    saved_step = run.step if resumed else None
    stopped_by, loss_value = None, None
    try:
        while stopped_by is None and (train.max_steps is None or run.step < train.max_steps):
            step_started = time.monotonic()
            loss = compute_loss(run)
            out_of_time = train.max_minutes is not None and step_started - started >= train.max_minutes * 60
            loss_value, nonfinite, stopping = agree(fabric, loss, stop.signal_name is not None or out_of_time)
            if nonfinite:
                raise DiffkitError(_nonfinite_message(run, f"loss became {loss_value}", saved_step))
            grad_norm = optimizer_step(run, loss)
            if not math.isfinite(grad_norm):
                raise DiffkitError(_nonfinite_message(run, f"gradient norm became {grad_norm}", saved_step))
            run.elapsed_seconds += time.monotonic() - step_started
            interval_losses.append(loss_value)
            progress.update(1)
            if run.step % train.log_every == 0 and log is not None:
                seconds = time.monotonic() - interval_started
                images_per_second = len(interval_losses) * train.batch_size / max(seconds, 1e-9)
                _log_row(run, log, progress, sum(interval_losses) / len(interval_losses), grad_norm,
                         images_per_second)
                interval_losses, interval_started = [], time.monotonic()
            if run.step % train.checkpoint_every == 0:
                checkpoint(run)
                saved_step = run.step
            if train.sample_every and run.step % train.sample_every == 0 and fabric.is_global_zero:
                write_samples(run)
            if stopping:
                stopped_by = stop.signal_name or ("max_minutes" if out_of_time else "another process stopping")
        stopped_by = stopped_by or "max_steps"
        if saved_step != run.step:
            checkpoint(run)
        finished = stopped_by in ("max_steps", "max_minutes")
        if finished and train.sample_every and run.step % train.sample_every != 0 and fabric.is_global_zero:
            write_samples(run)
    finally:
        progress.close()
        if log is not None:
            log.close()
    if fabric.is_global_zero:
        print(f"diffkit: stopped by {stopped_by} at step {run.step}; the model is in {run.run_dir}", flush=True)
    return TrainResult(run.run_dir, run.step, stopped_by, loss_value)


def _log_row(run: Run, log: MetricsLog, progress: tqdm, loss: float, grad_norm: float | None,
             images_per_second: float) -> None:
    """One metrics.csv row and the progress bar's loss and images/s."""
    log.write({
        "step": run.step, "epoch": run.batches.position(run.step - 1)[0], "loss": loss,
        "lr": learning_rate(run.step - 1, run.config.train), "grad_norm": grad_norm,
        "ema_decay": ema_decay(run.ema.updates - 1, run.ema.decay, run.ema.warmup),
        "images_per_second": images_per_second, "elapsed_minutes": run.elapsed_seconds / 60,
    })
    progress.set_postfix(loss=f"{loss:.4f}", images_per_second=f"{images_per_second:.0f}")


def _nonfinite_message(run: Run, what: str, saved_step: int | None) -> str:
    """The one sentence a NaN/inf loss or gradient ends the run with."""
    where = (f"the last checkpoint {run.run_dir / STATE_FILE} (step {saved_step}) is untouched"
             if saved_step is not None else "no checkpoint had been written yet")
    return (f"The training {what} at step {run.step + 1}; training stopped and {where}; "
            "lower train.lr or set train.grad_clip, then resume.")
