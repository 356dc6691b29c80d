"""Export a run as a shareable bundle: config.json, the EMA weights (fp16 by default: half the bytes, and
`diffkit.load` reads them back into a float32 network) and `command.txt`, the command that made it. A latent
model's autoencoder/ folder is copied byte for byte (float32): its SHA-256 ties it to the latent scale and to the
diffusion model's config. `training.json` keeps what the training cost (steps, minutes) once state.ckpt is left
behind."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffkit.bundle import CONFIG_FILE, WEIGHTS_FILE, load
from diffkit.checkpoint import TRAINING_FILE, training_record
from diffkit.config import save_config
from diffkit.errors import DiffkitError
from diffkit.files import atomic_path

COMMAND_FILE = "command.txt"


def export_bundle(run: str | Path, out: str | Path, *, fp16: bool = True, command: str | None = None) -> Path:
    """Copy a run's config and weights (fp16 unless fp16=False) into `out` with the command that made it."""
    bundle = load(run)  # refuses a run whose weights do not fit its config (or lacks its autoencoder) first
    run, out = Path(run), Path(out)
    if out.resolve() == run.resolve():
        raise DiffkitError(f"The export folder {out} is the run itself; choose another --out.")
    try:
        weights = load_file(str(run / WEIGHTS_FILE))
    except (SafetensorError, OSError) as error:
        raise DiffkitError(f"Cannot read {run / WEIGHTS_FILE} ({error}).") from error
    if fp16:
        weights = {key: value.half() if value.is_floating_point() else value for key, value in weights.items()}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_FILE) as temporary:
        save_file(weights, str(temporary), metadata={"format": "pt", "library": "diffkit",
                                                      "dtype": "float16" if fp16 else "float32"})
    save_config(bundle.config, out / CONFIG_FILE)  # in today's format, whatever version wrote the run's copy
    if bundle.encoder is not None:
        from diffkit.latent_model import AUTOENCODER_DIR, copy_autoencoder

        copy_autoencoder(run / AUTOENCODER_DIR, out)
    text = command if command is not None else " ".join(shlex.quote(part) for part in sys.argv)
    (out / COMMAND_FILE).write_text(text.rstrip("\n") + "\n")
    record = training_record(run)
    if record is not None:
        (out / TRAINING_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def bundle_megabytes(directory: str | Path) -> float:
    """Size of a bundle's weights file in MB."""
    return (Path(directory) / WEIGHTS_FILE).stat().st_size / 1e6


__all__ = ["export_bundle", "bundle_megabytes", "training_record"]
