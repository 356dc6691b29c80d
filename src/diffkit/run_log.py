"""What a run reports: `metrics.csv` rows (and TensorBoard scalars when tensorboard is installed).

Only rank 0 creates a `MetricsLog`. Rows are held in memory and written when the checkpoint that holds their
steps has been written (`commit`), so metrics.csv never describes steps that no checkpoint holds: a crash or a
full disk between two checkpoints leaves a file that matches the last checkpoint. On resume (and in a fresh
run, whose "checkpoint" is step 0) rows after the checkpoint's step, and rows that cannot be read, are dropped
first; unreadable lines are kept aside in `metrics.csv.unreadable` with a warning.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from diffkit.files import atomic_path

METRICS_FILE = "metrics.csv"
COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "ema_decay", "images_per_second", "elapsed_minutes")


def _readable(row: list[str], columns: tuple[str, ...] = COLUMNS) -> bool:
    """A row of `columns` numbers (empty cells allowed, step an integer)."""
    if len(row) != len(columns) or not row[0].isdigit():
        return False
    try:
        [float(cell) for cell in row if cell != ""]
    except ValueError:
        return False
    return True


def truncate_metrics(path: Path, last_step: int, columns: tuple[str, ...] = COLUMNS) -> str | None:
    """Keep the rows with step <= last_step (the state a checkpoint was taken in), once per step, in step order.

    Lines that are not metrics rows (a torn line, a second header, junk) are moved to `metrics.csv.unreadable`;
    returns a warning saying so, or None.
    """
    if not path.exists():
        return None
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    body = lines[1:] if lines and tuple(lines[0]) == columns else lines
    unreadable = [row for row in body if row and not _readable(row, columns)]
    by_step = {int(row[0]): row for row in body if row and _readable(row, columns) and int(row[0]) <= last_step}
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        csv.writer(handle).writerows([list(columns), *(by_step[step] for step in sorted(by_step))])
    if not unreadable:
        return None
    aside = path.with_name(path.name + ".unreadable")
    with aside.open("a", newline="") as handle:
        csv.writer(handle).writerows(unreadable)
    return f"dropped {len(unreadable)} unreadable line(s) from {path} (kept in {aside})."


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as dicts of floats (step as a float too)."""
    with Path(path).open(newline="") as handle:
        return [{key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)]


class MetricsLog:
    """Collects one row per logged step; `commit()` appends them to metrics.csv (and TensorBoard) at a checkpoint."""

    def __init__(self, run_dir: Path, checkpoint_step: int = 0, state_rows: list[dict] = (),
                 columns: tuple[str, ...] = COLUMNS):
        """Open the log of a run whose checkpoint is at `checkpoint_step`; `state_rows` are the rows that
        checkpoint carries, appended if a kill came between writing it and appending them. `columns` are the
        diffusion trainer's unless another trainer (the autoencoder's) logs other numbers."""
        self.path, self.columns = run_dir / METRICS_FILE, columns
        warning = truncate_metrics(self.path, checkpoint_step, columns)
        if warning:
            print(f"diffkit: warning: {warning}", file=sys.stderr, flush=True)
        if not self.path.exists():
            with atomic_path(self.path) as temporary, temporary.open("w", newline="") as handle:
                csv.writer(handle).writerow(columns)
        self.tensorboard = _tensorboard_writer(run_dir)
        logged = {int(row["step"]) for row in read_metrics(self.path)}
        self.pending: list[dict[str, float | int | None]] = [row for row in state_rows if row["step"] not in logged]
        if self.pending:
            self.commit()

    def write(self, row: dict[str, float | int | None]) -> None:
        """Hold one row (missing columns stay empty) until the next checkpoint."""
        self.pending.append(row)

    def commit(self) -> None:
        """Append the held rows to metrics.csv (flushed) and their scalars to TensorBoard."""
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writerows({key: "" if row.get(key) is None else row[key] for key in self.columns}
                             for row in self.pending)
        if self.tensorboard is not None:
            for row in self.pending:
                for key, value in row.items():
                    if key != "step" and value is not None:
                        self.tensorboard.add_scalar(f"train/{key}", value, int(row["step"]))
            self.tensorboard.flush()
        self.pending = []

    def close(self) -> None:
        """Drop uncommitted rows (no checkpoint holds them) and close the TensorBoard writer."""
        self.pending = []
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(run_dir: Path):
    """A SummaryWriter into run_dir/tensorboard when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional (the `tensorboard` extra): metrics.csv always has everything
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))
