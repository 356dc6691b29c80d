"""The training state `state.ckpt`: written atomically by rank 0, read with weights_only=True.

It holds the network, EMA, optimizer, step, data position and every random state of every process
(each process's global torch RNG and its loss-noise generator, gathered to rank 0 as uint8 tensors), so a
resumed run continues bit-for-bit where the checkpoint left off.
"""

from __future__ import annotations

import errno
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from diffkit.files import atomic_path
from diffkit.errors import DiffkitError
from diffkit.run_directory import STATE_FILE

if TYPE_CHECKING:  # lightning is slow to import; bundles and exports read states without it
    from lightning.fabric import Fabric

FORMAT_VERSION = 1
TRAINING_FILE = "training.json"  # an export's record of what its training cost, once state.ckpt is left behind
REQUIRED = ("config", "step", "dataset_length", "elapsed_seconds", "model", "ema", "optimizer", "random")


def atomic_save(state: dict[str, Any], path: str | Path) -> Path:
    """torch.save to a temporary file, then rename, so a crash never leaves half a checkpoint."""
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(state, temporary)
    return path


def load_state(path: str | Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """Read a training state on the CPU without executing code from it (weights_only=True).

    `required` are the keys it must hold (an autoencoder run's state has no "ema")."""
    path = Path(path)
    if not path.is_file():
        raise DiffkitError(f"{path} does not exist; resume a run directory that holds a {STATE_FILE}.")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol: the sentence below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception:  # an untrusted file: torch's many-line weights_only text would only confuse here
        state = None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION or not set(required) <= set(state):
        raise DiffkitError(f"{path} is not a diffkit checkpoint (format {FORMAT_VERSION}): it is damaged or was "
                           "written by another program; resume another run or start this one afresh.")
    return state


def training_record(path: str | Path) -> dict | None:
    """Steps and minutes of training behind a run (its state.ckpt) or an export (its training.json); None if
    neither says."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        state = load_state(path / STATE_FILE, required=("step", "elapsed_seconds"))
        return {"trained_steps": int(state["step"]),
                "training_minutes": round(float(state["elapsed_seconds"]) / 60, 2)}
    if (path / TRAINING_FILE).is_file():
        return json.loads((path / TRAINING_FILE).read_text())
    return None


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


def write_failure(error: OSError, path: Path, saved_step: int | None) -> DiffkitError:
    """The one sentence for a checkpoint or bundle that could not be written (a full disk, most often)."""
    kept = (f"the last checkpoint at step {saved_step} is intact" if saved_step is not None
            else "no checkpoint had been written yet")
    if error.errno == errno.ENOSPC:
        return DiffkitError(f"No space left on the device while writing {path}; {kept}; free some space, then "
                            f"resume with --resume {path.parent}.")
    return DiffkitError(f"Cannot write {path} ({error.strerror or error}); {kept}; fix that, then resume with "
                        f"--resume {path.parent}.")
