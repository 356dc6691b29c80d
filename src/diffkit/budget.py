"""Training budgets -> the learning-rate plan: warm-up length and cosine horizon from the steps a budget buys.

A budget is `train.max_steps` (known in advance: the plan is a pure function of the config) and/or
`train.max_minutes` (turned into steps by the measured speed: seconds per step, smoothed, skipping the first steps
of every session, which allocate; re-planned every few steps so the cosine ends where the budget does). Whichever
ends first defines the horizon. The clock is injected, so tests run budgets on a fake one.

Checkpoints and sample grids are timed apart from the steps (`spent_on`): a 64-image grid at 128 px takes minutes,
and counted as step time it would make the speed estimate swing every time one falls inside a measured interval.
The steps a budget buys are then the steps that fit in the time left beside the files due on the way. A fresh run
knows no file's cost until it has written one, so its first plan runs long and bends once the first grid is timed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

SKIPPED_STEPS = 2  # the first steps of every session allocate memory and warm caches: never measured
FIRST_PLAN_AFTER = 3  # measured steps before a time budget's first plan
REPLAN_EVERY = 10  # measured steps between re-plans
SMOOTHING = 0.3  # weight of the newest interval in the seconds-per-step estimate (an EMA over intervals)
REPORT_CHANGE = 0.1  # a re-plan moving the horizon by more than this fraction is printed
PERIODIC_KINDS = ("checkpoint", "grid")  # the files a loop writes every train.checkpoint_every / sample_every steps


def wall_clock() -> float:
    """Seconds on a monotonic clock: the budget's clock unless one is passed (tests patch this name)."""
    return time.monotonic()


@dataclass(frozen=True)
class Plan:
    """The shape of the learning rate, counted in updates n = step + 1 (so a plan ends on its last step).

    Warm-up: lr * n / warmup for n <= warmup (the last warm-up step is at the peak). Then the cosine's progress runs
    linearly from `anchor_progress` at update `anchor` to 1 at update `horizon`, the budget's last step; a re-plan
    moves the anchor to the current update with its current progress, so the learning rate stays continuous.
    """

    warmup: int
    horizon: int | None  # None: no budget, the learning rate stays at the peak after warm-up
    anchor: int
    anchor_progress: float = 0.0

    def progress(self, updates: int) -> float:
        """The cosine's progress in [0, 1] after `updates` updates (0 during warm-up and without a horizon)."""
        if self.horizon is None or updates <= self.warmup:
            return 0.0
        if updates <= self.anchor:  # before the last re-plan: only ever asked for past steps
            return self.anchor_progress * (updates - self.warmup) / max(self.anchor - self.warmup, 1)
        if self.horizon <= self.anchor:
            return 1.0
        return min(self.anchor_progress + (1 - self.anchor_progress) * (updates - self.anchor)
                   / (self.horizon - self.anchor), 1.0)


def warmup_for(train: Any, horizon: int | None) -> int:
    """min(train.warmup_steps, warmup_fraction of the horizon), at least one step when warm-up is on."""
    if horizon is None or train.warmup_steps == 0:
        return train.warmup_steps
    return min(train.warmup_steps, max(1, round(train.warmup_fraction * horizon)))


def step_plan(train: Any) -> Plan:
    """The plan a config gives before any time is measured: horizon decay_steps, else max_steps (else none)."""
    horizon = train.decay_steps or train.max_steps
    warmup = warmup_for(train, horizon)
    return Plan(warmup, horizon, warmup)


def periodic_every(train: Any, kind: str) -> int:
    """Steps between two periodic files of `kind` (0: never)."""
    return train.checkpoint_every if kind == "checkpoint" else train.sample_every


def files_due(train: Any, kind: str, after: int, until: int) -> int:
    """How many files of `kind` are written at the steps in (after, until]."""
    every = periodic_every(train, kind)
    return until // every - after // every if every > 0 and until > after else 0


def plan_inputs(train: Any) -> dict[str, Any]:
    """The config values a plan is made from; a resumed run whose values differ gets a new plan."""
    names = ("max_steps", "max_minutes", "decay_steps", "warmup_steps", "warmup_fraction", "lr_schedule")
    return {name: getattr(train, name) for name in names}


class Budget:
    """A run's learning-rate plan and its time budget, re-planned from the measured speed as the run goes.

    The loop asks `seconds()` once per step (budget seconds spent over all sessions), stops when `out_of_time`,
    and passes the processes' agreed seconds to `observe`, which re-plans every few steps. `state_dict` goes into
    state.ckpt: a resumed run with the same budget values continues the same plan and stops at the same total.
    """

    def __init__(self, train: Any, step: int = 0, saved: dict | None = None,
                 clock: Callable[[], float] | None = None):
        self.train, self.clock = train, clock if clock is not None else wall_clock
        self.inputs = plan_inputs(train)
        self.seconds_per_step: float | None = None
        self.reported_horizon: int | None = None
        self.estimated_steps: int | None = None  # the steps the time budget buys (before max_steps caps them)
        self.periodic_costs: dict[str, float] = {}  # measured seconds of one periodic file, per kind
        if saved is not None:
            self.periodic_costs = dict(saved.get("periodic_costs", {}))
        if saved is not None and saved["inputs"] == self.inputs:  # the same budget: continue its plan
            self.plan = Plan(**saved["plan"])
            self.budget_seconds, self.spent_before = saved["budget_seconds"], float(saved["spent_seconds"])
            self.seconds_per_step, self.reported_horizon = saved["seconds_per_step"], saved["reported_horizon"]
            self.estimated_steps = saved.get("estimated_steps")
            self.start_session(step)
        elif saved is None:
            self.new_budget(step, 0.0)
        else:  # other budget values: a new plan; the time budget goes on unless max_minutes changed
            self.seconds_per_step = saved["seconds_per_step"]
            same_minutes = saved["inputs"]["max_minutes"] == train.max_minutes
            self.new_budget(step, float(saved["spent_seconds"]), Plan(**saved["plan"]),
                            saved["budget_seconds"] if same_minutes else None)

    def new_budget(self, step: int, spent: float, old_plan: Plan | None = None,
                   budget_seconds: float | None = None) -> None:
        """A plan as if the run had had this budget from its start: the cosine restarts from the warm-up's end (a
        warm-up already done is kept). The time budget is `budget_seconds` in all, else train.max_minutes from now
        (after `spent` seconds)."""
        minutes = self.train.max_minutes
        if budget_seconds is None:
            budget_seconds = None if minutes is None else spent + minutes * 60
        self.budget_seconds, self.spent_before = budget_seconds, spent
        horizon = self._horizon(step, spent)
        kept = old_plan is not None and step >= old_plan.warmup
        warmup = old_plan.warmup if kept else warmup_for(self.train, horizon)
        self.plan = Plan(warmup, horizon, warmup)
        self.reported_horizon = None
        self.start_session(step)

    def extend(self, step: int) -> None:
        """Train train.max_minutes more from now (`--max-minutes` on resume), re-planned as `new_budget` says."""
        self.new_budget(step, self.spent_before, self.plan)

    def start_session(self, step: int) -> None:
        """Start timing this process's session at `step` (the first SKIPPED_STEPS are not measured)."""
        self.session_step, self.session_started = step, self.clock()
        self.reference: tuple[int, float] | None = None  # (step, seconds) where the current interval began
        self.last_seconds = self.spent_before
        self.pending = {kind: 0.0 for kind in PERIODIC_KINDS}  # this process's file seconds since the reference

    def spent_on(self, kind: str, seconds: float) -> None:
        """Note that a periodic file of `kind` took `seconds` (this process's clock); `observe` takes it out of the
        step time and learns the file's cost from it."""
        self.pending[kind] += seconds

    def periodic_seconds(self) -> tuple[float, ...]:
        """This process's file seconds since the interval began, in PERIODIC_KINDS order (for `observe`)."""
        return tuple(self.pending[kind] for kind in PERIODIC_KINDS)

    @property
    def timed(self) -> bool:
        """Whether a time budget is set (else the plan is fixed by the step counts)."""
        return self.budget_seconds is not None

    def seconds(self) -> float:
        """Budget seconds spent so far: earlier sessions' and this session's wall time."""
        return self.spent_before + self.clock() - self.session_started

    def out_of_time(self, seconds: float) -> bool:
        """Whether `seconds` spent reach the time budget (the step that starts then still runs, as a signal's)."""
        return self.budget_seconds is not None and seconds >= self.budget_seconds

    def exhausted(self) -> bool:
        """Whether a resumed run has no time left (it would train one step and stop)."""
        return self.out_of_time(self.spent_before)

    def observe(self, step: int, seconds: float, periodic: tuple[float, ...] | None = None) -> str | None:
        """Note that `step` starts after `seconds`, of which `periodic` (per PERIODIC_KINDS, since the interval
        began) went on files; both agreed by all processes (None: this process's own). Re-plan when due. Returns the
        line to print when the first timed plan is made or a re-plan moves the horizon by more than REPORT_CHANGE."""
        self.last_seconds = seconds
        if not self.timed or step - self.session_step < SKIPPED_STEPS:
            return None
        if self.reference is None:
            self._restart_interval(step, seconds)
            return None
        reference_step, reference_seconds = self.reference
        if step - reference_step < (FIRST_PLAN_AFTER if self.seconds_per_step is None else REPLAN_EVERY):
            return None
        file_seconds = dict(zip(PERIODIC_KINDS, periodic if periodic is not None else self.periodic_seconds()))
        steps_seconds = seconds - reference_seconds - sum(file_seconds.values())
        if steps_seconds <= 0:  # a clock too coarse to see these steps: measure a longer interval
            return None
        for kind, spent in file_seconds.items():
            written = files_due(self.train, kind, reference_step, step)
            if written > 0:  # the latest measurement: a grid's cost depends on the model's state only through EMA
                self.periodic_costs[kind] = spent / written
        interval = steps_seconds / (step - reference_step)
        self.seconds_per_step = interval if self.seconds_per_step is None else (
            SMOOTHING * interval + (1 - SMOOTHING) * self.seconds_per_step)
        self._restart_interval(step, seconds)
        self._replan(step, seconds)
        reported = self.reported_horizon
        if reported is None or abs(self.plan.horizon - reported) > REPORT_CHANGE * reported:
            self.reported_horizon = self.plan.horizon
            return self.describe(replanned=reported is not None)
        return None

    def _restart_interval(self, step: int, seconds: float) -> None:
        """Begin a measured interval at (step, seconds); files written before it are not in it."""
        self.reference = (step, seconds)
        self.pending = {kind: 0.0 for kind in PERIODIC_KINDS}

    def _steps_starting(self, step: int, remaining: float) -> int:
        """How many more steps start before `remaining` seconds are spent, the files due after each step counted:
        the largest n with (n - 1) steps and the files of steps (step, step + n - 1] taking less than `remaining`
        (binary search: that time grows with n). Without files it is ceil(remaining / seconds_per_step)."""
        def fits(n: int) -> bool:
            files = sum(self.periodic_costs.get(kind, 0.0) * files_due(self.train, kind, step, step + n - 1)
                        for kind in PERIODIC_KINDS)
            return (n - 1) * self.seconds_per_step + files < remaining

        if remaining <= 0:
            return 0
        low, high = 1, math.ceil(remaining / self.seconds_per_step)  # fits(1) holds; fits(high + 1) cannot
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        return low

    def _horizon(self, step: int, seconds: float) -> int | None:
        """The update count the cosine ends at: decay_steps if set, else the first budget to end (None: no budget)."""
        train = self.train
        if self.timed and self.seconds_per_step is not None:
            # Steps start while time remains, and the one that starts after the deadline still runs.
            self.estimated_steps = step + self._steps_starting(step, self.budget_seconds - seconds) + 1
        if train.decay_steps:
            return train.decay_steps
        if not self.timed or self.seconds_per_step is None:
            return train.max_steps
        return self.estimated_steps if train.max_steps is None else min(train.max_steps, self.estimated_steps)

    def _replan(self, step: int, seconds: float) -> None:
        """Move the horizon to the current estimate, continuing the cosine from this update's progress."""
        old, horizon = self.plan, self._horizon(step, seconds)
        if step >= old.warmup:  # warm-up is over: it stays, and the cosine bends at this update
            plan = Plan(old.warmup, horizon, step, old.progress(step))
        else:
            warmup = max(warmup_for(self.train, horizon), step)
            plan = Plan(warmup, horizon, warmup)
        if (plan.warmup, plan.horizon) != (old.warmup, old.horizon):  # unchanged: keep the plan bit for bit
            self.plan = plan

    def describe(self, replanned: bool = False) -> str:
        """One line saying what was chosen: the budget, its steps and speed, the warm-up and the cosine's end."""
        train, plan = self.train, self.plan
        if self.timed and self.seconds_per_step is not None:
            what = f"budget {round(self.budget_seconds / 60, 2):g} minutes"
            if self.spent_before > 0:  # a resumed run: say what is left of it
                what += f" ({max(self.budget_seconds - self.last_seconds, 0) / 60:.1f} left)"
            what += f" ~ {self.estimated_steps} steps at {1 / self.seconds_per_step:.3g} steps/s"
            if train.max_steps is not None and train.max_steps < self.estimated_steps:
                what += f" (train.max_steps={train.max_steps} ends first)"
        elif self.timed:
            what = f"budget {train.max_minutes:g} minutes (steps planned once the speed is measured)"
        elif train.max_steps is not None:
            what = f"budget {train.max_steps} steps"
        else:
            what = "no budget"
        shape = f"warm-up {plan.warmup} step{'' if plan.warmup == 1 else 's'}"
        if train.lr_schedule == "constant" or plan.horizon is None:
            shape += ", then a constant learning rate"
        else:
            shape += f", cosine to step {plan.horizon}" + (" (train.decay_steps)" if train.decay_steps else "")
        return f"diffkit: {'re-planned: ' if replanned else ''}{what}: {shape}"

    def state_dict(self) -> dict[str, Any]:
        """The plan and budget for state.ckpt, with the seconds spent until now (time after it, lost to a crash,
        is not counted: a resumed run spends it again on the steps it repeats)."""
        return {"inputs": dict(self.inputs), "plan": dataclasses.asdict(self.plan),
                "budget_seconds": self.budget_seconds, "spent_seconds": self.seconds(),
                "seconds_per_step": self.seconds_per_step, "reported_horizon": self.reported_horizon,
                "estimated_steps": self.estimated_steps, "periodic_costs": dict(self.periodic_costs)}
