"""The run directory and its training state `state.ckpt`: written atomically by rank 0, read with weights_only=True.

It holds the network, EMA, optimizer, step, data position and every random state of every process
(each process's global torch RNG and its loss-noise generator, gathered to rank 0 as uint8 tensors), so a
resumed run continues bit-for-bit where the checkpoint left off. `prepare_run_dir` picks or checks the
directory for a new or resumed run on rank 0 and tells every process.
"""

from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric import Fabric
from torch import Tensor

from diffkit.files import atomic_path
from diffkit.config import Config, format_config, save_config
from diffkit.errors import DiffkitError

STATE_FILE = "state.ckpt"
FORMAT_VERSION = 1
SAMPLES_DIR = "samples"
FIXED_SECTIONS = ("model", "diffusion", "data")  # what a resumed run may not change


def atomic_save(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file, then rename, so a crash never leaves half a checkpoint."""
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a training state on the CPU without executing code from it (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise DiffkitError(f"{path} does not exist; resume a run directory that holds a {STATE_FILE}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError) as error:
        raise DiffkitError(f"Cannot read the training state {path} ({error}); it is damaged or not a "
                           "diffkit checkpoint.") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise DiffkitError(f"{path} is not a diffkit training state (format {FORMAT_VERSION}).")
    return state


def _gather(fabric: Fabric, tensor: Tensor) -> Tensor:
    """(world_size, ...) stack of one uint8 tensor from every process (rank order), on the CPU."""
    if fabric.world_size == 1:
        return tensor[None].cpu()
    with warnings.catch_warnings():  # Fabric's all_gather calls a torch function that warns it is deprecated
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
        return fabric.all_gather(tensor.to(fabric.device)).cpu()


def gather_random_states(fabric: Fabric, noise: torch.Generator) -> dict[str, Tensor]:
    """Every process's global torch RNG state and noise-generator state, stacked by rank."""
    states = {"torch": torch.get_rng_state(), "noise": noise.get_state()}
    if fabric.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(fabric.device)
    return {name: _gather(fabric, state) for name, state in states.items()}


def restore_random_states(states: dict[str, Tensor], rank: int, world_size: int, noise: torch.Generator,
                          device: torch.device) -> bool:
    """Restore this process's random states; False when the checkpoint came from another process count."""
    if states["torch"].shape[0] != world_size:
        return False
    torch.set_rng_state(states["torch"][rank])
    noise.set_state(states["noise"][rank])
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"][rank], device)
    return True


def save_training_state(fabric: Fabric, path: str | Path, state: dict[str, Any], noise: torch.Generator) -> None:
    """Gather random states from all processes and write `state` + them atomically on rank 0."""
    random_states = gather_random_states(fabric, noise)  # a collective: every process must call this
    if fabric.is_global_zero:
        atomic_save({"format": FORMAT_VERSION, **state, "random": random_states}, path)
    fabric.barrier()


def prepare_run_dir(fabric: Fabric, config: Config, run_dir: str | Path | None, name: str, resume: bool,
                    fixed: tuple[str, ...] = FIXED_SECTIONS) -> Path:
    """Rank 0 checks or creates the run directory (a fresh runs/NAME[-k] when none is given); all ranks agree.

    `fixed` names the config sections a resumed run may not change (any config with to_dict() works)."""
    chosen, problem = None, None
    if fabric.is_global_zero:
        try:
            chosen = _checked_run_dir(config, run_dir, name, resume, fixed)
        except DiffkitError as error:
            problem = str(error)
        else:
            chosen.mkdir(parents=True, exist_ok=True)
            (chosen / SAMPLES_DIR).mkdir(exist_ok=True)
            if not resume:  # a resumed run's config.json changes only once its state has loaded (train.py)
                save_config(config, chosen / "config.json")
            print(f"diffkit: run directory {chosen}\n{format_config(config)}", flush=True)
    chosen, problem = fabric.broadcast((str(chosen) if chosen else None, problem))
    if problem:  # every process stops with rank 0's reason instead of waiting for it forever
        raise DiffkitError(problem)
    return Path(chosen)


def _checked_run_dir(config: Config, run_dir: str | Path | None, name: str, resume: bool,
                     fixed: tuple[str, ...]) -> Path:
    if resume:
        directory = Path(run_dir)
        if not (directory / STATE_FILE).is_file() or not (directory / "config.json").is_file():
            raise DiffkitError(f"{directory} holds no {STATE_FILE} and config.json to resume from; pass the "
                               "directory of a run that has written a checkpoint.")
        try:
            saved = json.loads((directory / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DiffkitError(f"Cannot parse {directory / 'config.json'} ({error}); the run's config is damaged.") from None
        changed = [f"{section}.{key}" for section in fixed for key, value in config.to_dict()[section].items()
                   if saved[section].get(key) != value]
        if changed:
            raise DiffkitError(f"Cannot resume {directory} with a different {', '.join(changed)}; only "
                               f"{' and '.join(f'{s}.*' for s in config.to_dict() if s not in fixed)} may change "
                               "when resuming.")
        return directory
    if run_dir is None:
        directory, suffix = Path("runs") / name, 1
        while (directory / STATE_FILE).exists() or (directory / "config.json").exists():
            suffix += 1
            directory = Path("runs") / f"{name}-{suffix}"
        return directory
    directory = Path(run_dir)
    if (directory / STATE_FILE).exists():
        raise DiffkitError(f"{directory} already holds a run; pass --resume {directory} to continue it, "
                           "or choose another --run-dir.")
    return directory
