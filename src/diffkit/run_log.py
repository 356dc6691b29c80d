"""What a run reports: `metrics.csv` rows (and TensorBoard scalars when tensorboard is installed).

Only rank 0 creates a `MetricsLog`. On resume the rows after the checkpoint's step are dropped first, so a
run killed between a checkpoint and its next one does not log those steps twice.
"""

from __future__ import annotations

import csv
from pathlib import Path

from diffkit.files import atomic_path

METRICS_FILE = "metrics.csv"
COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "ema_decay", "images_per_second", "elapsed_minutes")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the header and the rows with step <= last_step (the state a checkpoint was taken in)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    kept = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= last_step]
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        csv.writer(handle).writerows(kept)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as dicts of floats (step as a float too)."""
    with Path(path).open(newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


class MetricsLog:
    """Appends one row per logged step to metrics.csv, flushed at once so a crash loses nothing logged."""

    def __init__(self, run_dir: Path, resumed_step: int | None = None, columns: tuple[str, ...] = COLUMNS):
        self.path = run_dir / METRICS_FILE
        self.columns = columns
        if resumed_step is not None:
            truncate_metrics(self.path, resumed_step)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.handle = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, fieldnames=columns)
        if new:
            self.writer.writeheader()
        self.tensorboard = _tensorboard_writer(run_dir)

    def write(self, row: dict[str, float | int | None]) -> None:
        """Append one row (missing columns stay empty) and its scalars to TensorBoard."""
        self.writer.writerow({key: "" if row.get(key) is None else row[key] for key in self.columns})
        self.handle.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value is not None:
                    self.tensorboard.add_scalar(f"train/{key}", value, int(row["step"]))

    def close(self) -> None:
        """Close the CSV file and the TensorBoard writer."""
        self.handle.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(run_dir: Path):
    """A SummaryWriter into run_dir/tensorboard when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.csv always has everything
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
