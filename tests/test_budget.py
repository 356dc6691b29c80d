"""Training budgets plan the learning rate (`diffkit.budget`), on a fake clock; EDM2's power-function EMA."""

import io
import math

import pytest
import torch
from torch import nn

import diffkit.budget as budget_module
import diffkit.train as train_module
from diffkit.budget import Budget, step_plan
from diffkit.config import TrainConfig
from diffkit.ema import EMA, power_function_beta, power_function_gamma
from diffkit.errors import DiffkitError
from diffkit.optimizer import learning_rate
from diffkit.run_log import read_metrics

from tiny_run import one_thread, tiny_config


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_budget(budget: Budget, train: TrainConfig, clock: FakeClock, step_seconds, step: int = 0,
               stop_at: int | None = None, file_seconds: dict[str, float] | None = None
               ) -> tuple[list[float], list[str], int]:
    """The training loop's use of a budget: (each step's learning rate, the lines it printed, the final step).
    `file_seconds`: what one periodic file of each kind costs, spent after the step it is due at."""
    rates, lines = [], []
    while (train.max_steps is None or step < train.max_steps) and step != stop_at:
        seconds = budget.seconds()
        out_of_time = budget.out_of_time(seconds)
        line = budget.observe(step, seconds)
        if line is not None:
            lines.append(line)
        rates.append(learning_rate(step, train, budget.plan))
        clock.now += step_seconds(step)
        step += 1
        for kind, seconds in (file_seconds or {}).items():
            if budget_module.files_due(train, kind, step - 1, step):
                clock.now += seconds
                budget.spent_on(kind, seconds)
        if out_of_time:  # the step that starts after the deadline still runs, as in train.training_loop
            break
    return rates, lines, step


def steps_in_budget(budget_seconds: float, step_seconds, every: dict[int, float]) -> int:
    """Brute force: the steps a run takes when a step starts while time remains (the one starting after the deadline
    still runs) and a file costing every[n] seconds follows each step that is a multiple of n."""
    now, step = 0.0, 0
    while True:
        out_of_time = now >= budget_seconds
        now += step_seconds(step)
        step += 1
        now += sum(cost for n, cost in every.items() if step % n == 0)
        if out_of_time:
            return step


def allocating_then(seconds: float):
    """Step times of a run whose first two steps allocate (5 s each) and which then runs at `seconds` per step."""
    return lambda step: 5.0 if step < 2 else seconds


def test_a_time_budget_warms_up_to_the_peak_and_decays_to_the_minimum_by_its_end():
    train = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=500, max_steps=None, max_minutes=10)
    clock = FakeClock()
    rates, lines, steps = run_budget(Budget(train, clock=clock), train, clock, allocating_then(0.8))
    # 10 s allocating, then 590 s at 0.8 s a step: steps 2..739 start in time, and step 740 runs past the deadline.
    assert steps == 741
    assert lines == ["diffkit: budget 10 minutes ~ 741 steps at 1.25 steps/s: warm-up 37 steps, cosine to step 741"]
    peak = rates.index(max(rates))
    assert rates[peak] == pytest.approx(1.0) and peak == 36  # the warm-up's last step: 5% of 741
    assert rates[-1] == pytest.approx(0.1)  # the minimum on the budget's last step
    assert all(later <= earlier for earlier, later in zip(rates[peak:], rates[peak + 1:]))


def test_grids_and_checkpoints_are_timed_apart_so_the_cosine_still_ends_on_the_budgets_last_step():
    train = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=20, max_steps=None, max_minutes=10, sample_every=100,
                        checkpoint_every=250)
    clock = FakeClock()
    budget = Budget(train, clock=clock)
    # A 30 s grid every 100 steps and a 2 s checkpoint every 250 would be 7% of each interval that holds one.
    rates, lines, steps = run_budget(budget, train, clock, allocating_then(0.8),
                                     file_seconds={"grid": 30.0, "checkpoint": 2.0})
    assert steps == steps_in_budget(600, allocating_then(0.8), {100: 30.0, 250: 2.0})
    assert budget.seconds_per_step == pytest.approx(0.8)  # the files never leak into the step time
    assert budget.periodic_costs == pytest.approx({"grid": 30.0, "checkpoint": 2.0})
    assert budget.plan.horizon == steps
    assert rates[-1] == pytest.approx(0.1) and rates[-2] > 0.1 + 1e-6  # the minimum on the last step, not before
    assert all(line.startswith("diffkit: budget 10 minutes") for line in lines[:1])


def test_files_due_and_the_steps_that_fit_beside_them_at_the_boundaries():
    train = TrainConfig(max_steps=None, max_minutes=1, sample_every=10, checkpoint_every=4)
    assert budget_module.files_due(train, "grid", 10, 20) == 1  # the file at 10 was the interval's start
    assert budget_module.files_due(train, "grid", 9, 10) == 1 and budget_module.files_due(train, "grid", 10, 10) == 0
    assert budget_module.files_due(train, "checkpoint", 3, 12) == 3  # 4, 8, 12
    assert budget_module.files_due(TrainConfig(sample_every=0), "grid", 0, 100) == 0
    budget = Budget(train, clock=FakeClock())
    budget.seconds_per_step, budget.periodic_costs = 1.0, {"grid": 5.0}
    # From step 8: the n-th further step starts after n - 1 steps and the grids at steps (8, 8 + n - 1].
    # n = 3 starts at 2 s (files at 9, 10: the grid at 10) + 5 s = 7 s; n = 4 at 8 s.
    assert budget._steps_starting(8, 7.0) == 2 and budget._steps_starting(8, 7.5) == 3
    assert budget._steps_starting(8, 8.5) == 4 and budget._steps_starting(8, 0.0) == 0
    brute = [max(n for n in range(1, 50) if (n - 1) + 5.0 * budget_module.files_due(train, "grid", 8, 8 + n - 1)
                 < remaining) for remaining in (0.5, 3.0, 7.0, 7.5, 20.0, 21.5, 33.0)]
    assert [budget._steps_starting(8, remaining) for remaining in (0.5, 3.0, 7.0, 7.5, 20.0, 21.5, 33.0)] == brute


def test_the_learned_file_costs_are_saved_and_plan_a_resumed_budget():
    train = TrainConfig(lr=1.0, warmup_steps=5, max_steps=None, max_minutes=2, sample_every=20)
    clock = FakeClock()
    budget = Budget(train, clock=clock)
    run_budget(budget, train, clock, allocating_then(0.5), stop_at=60, file_seconds={"grid": 4.0})
    resumed = Budget(train, 60, saved_and_loaded(budget.state_dict()), clock=clock)
    assert resumed.periodic_costs == {"grid": 4.0}
    _, _, steps = run_budget(resumed, train, clock, allocating_then(0.5), step=60, file_seconds={"grid": 4.0})
    assert resumed.plan.horizon == steps


def test_a_slower_machine_moves_the_horizon_and_the_rate_still_ends_at_its_minimum():
    train = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=20, max_steps=None, max_minutes=2)
    clock = FakeClock()
    # 0.17 s a step until step 300 (51 s), then 0.4 s (another process took a core).
    rates, lines, steps = run_budget(Budget(train, clock=clock), train, clock, lambda step: 0.17 if step < 300 else 0.4)
    assert steps == 300 + math.ceil((120 - 51) / 0.4) + 1
    assert len(lines) >= 2 and lines[0].startswith("diffkit: budget 2 minutes ~ 707 steps at 5.88 steps/s")
    assert all(line.startswith("diffkit: re-planned: budget 2 minutes ~ ") for line in lines[1:])
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)
    after_peak = rates[19:]
    assert after_peak[0] == pytest.approx(1.0)
    assert max(abs(a - b) for a, b in zip(after_peak, after_peak[1:])) < 0.02  # re-plans bend, never jump


def test_a_step_budget_shorter_than_the_warm_up_still_warms_up_and_decays_without_a_clock():
    train = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=500, max_steps=40)
    clock = FakeClock()
    budget = Budget(train, clock=clock)
    rates, lines, steps = run_budget(budget, train, clock, lambda step: 1000.0 * step)  # wild times change nothing
    assert steps == 40 and lines == [] and budget.plan == step_plan(train)
    assert budget.describe() == "diffkit: budget 40 steps: warm-up 2 steps, cosine to step 40"
    assert rates[:2] == [0.5, 1.0] and rates[-1] == pytest.approx(0.1)
    assert rates == [learning_rate(step, train) for step in range(40)]  # the config's own plan
    assert all(later < earlier for earlier, later in zip(rates[1:], rates[2:]))


@pytest.mark.parametrize("max_steps, horizon, words", [
    (20000, 741, "budget 10 minutes ~ 741 steps at 1.25 steps/s: warm-up 37 steps"),
    (500, 500, "~ 741 steps at 1.25 steps/s (train.max_steps=500 ends first): warm-up 25 steps, cosine to step 500"),
])
def test_max_steps_and_max_minutes_plan_for_whichever_ends_first(max_steps, horizon, words):
    train = TrainConfig(lr=1.0, warmup_steps=500, max_steps=max_steps, max_minutes=10)
    clock = FakeClock()
    budget = Budget(train, clock=clock)
    assert budget.plan.horizon == max_steps  # before the speed is measured: the step budget
    rates, lines, steps = run_budget(budget, train, clock, allocating_then(0.8))
    assert budget.plan.horizon == horizon == steps and words in lines[0]
    assert rates[-1] == pytest.approx(0.1 * 1.0)


def saved_and_loaded(state: dict) -> dict:
    """A budget's state through torch.save and torch.load(weights_only=True), as state.ckpt carries it."""
    buffer = io.BytesIO()
    torch.save({"budget": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["budget"]


def test_a_resumed_budget_continues_the_same_schedule_and_stops_at_the_same_total():
    train = TrainConfig(lr=1.0, warmup_steps=50, max_steps=None, max_minutes=3)
    speed = allocating_then(0.3)
    clock = FakeClock()
    whole, _, whole_steps = run_budget(Budget(train, clock=clock), train, clock, speed)

    clock = FakeClock()
    first = Budget(train, clock=clock)
    before, _, stopped = run_budget(first, train, clock, speed, stop_at=300)
    saved = saved_and_loaded(first.state_dict())
    clock = FakeClock()
    clock.now = 1234.0  # another process, another clock
    second = Budget(train, stopped, saved, clock=clock)
    assert second.plan == first.plan and second.seconds() == pytest.approx(10 + 298 * 0.3)
    after, lines, steps = run_budget(second, train, clock, speed, step=stopped)
    assert steps == whole_steps == 2 + math.ceil(170 / 0.3) + 1 and lines == []
    assert before + after == pytest.approx(whole, rel=1e-12, abs=0)


def test_a_finished_time_budget_is_spent_and_more_minutes_replan_it_as_one_longer_run():
    train = TrainConfig(lr=1.0, min_lr_ratio=0.1, warmup_steps=50, max_steps=None, max_minutes=1)
    clock = FakeClock()
    first = Budget(train, clock=clock)
    rates, _, stopped = run_budget(first, train, clock, allocating_then(0.35))
    assert rates[-1] == pytest.approx(0.1)
    resumed = Budget(train, stopped, saved_and_loaded(first.state_dict()), clock=FakeClock())
    assert resumed.exhausted()
    resumed.extend(stopped)  # --max-minutes 1 on resume: one more minute, planned as a 2-minute run from the start
    assert not resumed.exhausted() and resumed.budget_seconds == pytest.approx(first.seconds() + 60)
    assert resumed.plan.warmup == first.plan.warmup and resumed.plan.horizon == stopped + math.ceil(60 / 0.35) + 1
    extended = resumed.describe()
    assert extended.startswith("diffkit: budget 2") and "(1.0 left) ~ " in extended
    assert resumed.plan.anchor == resumed.plan.warmup  # the cosine of one longer run, not a bend of the old one
    assert learning_rate(stopped, train, resumed.plan) > 0.5  # so the rate rises from the minimum to its value there


def test_power_function_ema_gamma_solves_the_closed_form():
    # EDM2 sec. 3.1: sigma_rel = 0.10 gives gamma = 6.94, 0.05 gives 16.97.
    assert power_function_gamma(0.10) == pytest.approx(6.94, abs=0.005)
    assert power_function_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    for sigma_rel in (0.01, 0.05, 0.1, 0.2, 0.28):
        gamma = power_function_gamma(sigma_rel)
        assert gamma > 0
        assert (gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)) == pytest.approx(sigma_rel ** 2, rel=1e-10)


class Moments(nn.Module):
    """One float64 parameter (x, x^2): its average over a profile holds the profile's mean and second moment."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(2, dtype=torch.float64))


def test_power_function_ema_decays_and_averages_with_relative_width_sigma_rel():
    network, sigma_rel, updates = Moments(), 0.1, 1000
    gamma = power_function_gamma(sigma_rel)
    ema = EMA(network, decay=0.5, warmup=False, sigma_rel=sigma_rel)  # decay and warmup are unused
    decays = []
    with torch.no_grad():
        for t in range(1, updates + 1):
            network.value.copy_(torch.tensor([t / updates, (t / updates) ** 2], dtype=torch.float64))
            decays.append(ema.update(network))
    assert decays[0] == 0.0  # the first update copies the weights
    assert decays[:4] == pytest.approx([(1 - 1 / t) ** (gamma + 1) for t in range(1, 5)], rel=1e-12)
    assert decays[-1] == power_function_beta(updates, gamma) and ema.decay_at(updates - 1) == decays[-1]
    mean, second = ema.module.value.tolist()
    assert math.sqrt(second - mean ** 2) == pytest.approx(sigma_rel, rel=0.01)  # the profile's std / its length
    assert mean == pytest.approx((gamma + 1) / (gamma + 2), rel=1e-3)


@pytest.mark.parametrize("override, words", [
    ("train.warmup_fraction=0", r"train\.warmup_fraction=0.*in \(0, 1\]"),
    ("train.warmup_fraction=1.5", r"train\.warmup_fraction=1\.5.*in \(0, 1\]"),
    ("train.ema_sigma_rel=0", r"train\.ema_sigma_rel=0.*gamma > 0"),
    ("train.ema_sigma_rel=0.3", r"train\.ema_sigma_rel=0\.3.*gamma > 0"),
])
def test_budget_and_ema_fields_are_validated(override, words):
    with pytest.raises(DiffkitError, match=words):
        tiny_config(override)
    assert tiny_config("train.ema_sigma_rel=0.05", "train.warmup_fraction=1").train.ema_sigma_rel == 0.05


single_thread = pytest.fixture(one_thread)


class StepClock:
    """Time that passes only while the model computes a loss: 0.5 s a step, in every process alike."""

    def __init__(self) -> None:
        self.now, self.stop_after = 0.0, None

    def __call__(self) -> float:
        return self.now


def test_a_timed_training_split_by_a_signal_resumes_with_the_same_learning_rates(tmp_path, monkeypatch,
                                                                                single_thread):
    clock = StepClock()
    monkeypatch.setattr(budget_module, "wall_clock", clock)
    original_loss = train_module.compute_loss

    def timed_loss(run):
        clock.now += 0.5
        return original_loss(run)

    class SignalAt:
        """A StopRequest whose SIGTERM arrives once the clock reaches `clock.stop_after`."""

        def __enter__(self):
            return self

        def __exit__(self, *exception):
            return False

        @property
        def signal_name(self):
            return "SIGTERM" if clock.stop_after is not None and clock.now >= clock.stop_after else None

    monkeypatch.setattr(train_module, "compute_loss", timed_loss)
    monkeypatch.setattr(train_module, "StopRequest", SignalAt)
    # 6.2 s at 0.5 s a step: steps 0..11 start in time, step 12 after the deadline.
    config = tiny_config("train.max_steps=none", f"train.max_minutes={6.2 / 60!r}", "train.sample_every=0",
                         "train.checkpoint_every=100")
    launch = train_module.Launch(accelerator="cpu")
    whole = train_module.train(config, tmp_path / "whole", launch=launch, quiet=True)
    assert (whole.step, whole.stopped_by) == (13, "max_minutes")

    clock.now, clock.stop_after = 0.0, 4.0
    split = train_module.train(config, tmp_path / "split", launch=launch, quiet=True)
    assert (split.step, split.stopped_by) == (8, "SIGTERM")
    clock.stop_after = None
    resumed = train_module.train(config, tmp_path / "split", resume=True, launch=launch, quiet=True)
    assert (resumed.step, resumed.stopped_by) == (13, "max_minutes")
    expected, found = read_metrics(tmp_path / "whole" / "metrics.csv"), read_metrics(tmp_path / "split" / "metrics.csv")
    assert [row["step"] for row in found] == list(range(1, 14))
    assert [row["lr"] for row in found] == [row["lr"] for row in expected]
    assert expected[-1]["lr"] == pytest.approx(0.1 * 1e-3)  # the minimum on the budget's last step
    with pytest.raises(DiffkitError, match=r"has spent its time budget of 0\.103 minutes"):
        train_module.train(config, tmp_path / "split", resume=True, launch=launch, quiet=True)


def test_the_loop_times_its_sample_grids_apart_and_ends_the_cosine_on_the_last_step(tmp_path, monkeypatch,
                                                                                   single_thread):
    clock = StepClock()
    monkeypatch.setattr(budget_module, "wall_clock", clock)
    original_loss, original_grid = train_module.compute_loss, train_module.write_samples

    def timed_loss(run):
        clock.now += 0.5
        return original_loss(run)

    def slow_grid(run, final=False):
        clock.now += 2.0  # a grid costs four steps
        return original_grid(run, final=final)

    monkeypatch.setattr(train_module, "compute_loss", timed_loss)
    monkeypatch.setattr(train_module, "write_samples", slow_grid)
    config = tiny_config("train.max_steps=none", f"train.max_minutes={12.5 / 60!r}", "train.sample_every=5",
                         "train.checkpoint_every=100", "sample.n=1", "sample.steps=2")
    result = train_module.train(config, tmp_path / "run", launch=train_module.Launch(accelerator="cpu"), quiet=True)
    assert result.step == steps_in_budget(12.5, lambda step: 0.5, {5: 2.0})
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows[-1]["lr"] == pytest.approx(0.1 * 1e-3) and rows[-2]["lr"] > 0.1 * 1e-3 * (1 + 1e-6)


class OtherProcess:
    """A Fabric seen from one of two processes; the other holds `theirs` (its loss, flags and clock)."""

    def __init__(self, rank: int, theirs: torch.Tensor) -> None:
        self.world_size, self.global_rank, self.theirs = 2, rank, theirs

    def all_reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        return tensor + self.theirs.to(tensor.dtype)


def test_every_process_plans_from_process_zeros_clock():
    from diffkit.train_loop import agree

    # Process 0 at 10 s with 3 s of grids, process 1 at 12 s (it waited for the grid) and none.
    zero = torch.tensor([1.0, 0.0, 0.0, 10.0, 0.0, 3.0], dtype=torch.float64)
    one = torch.tensor([3.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # its clock is left out: zeros
    seen_by_one = agree(OtherProcess(1, zero), torch.tensor(3.0), True, (12.0, 0.0, 0.0))
    seen_by_zero = agree(OtherProcess(0, one), torch.tensor(1.0), False, (10.0, 0.0, 3.0))
    assert seen_by_one == seen_by_zero == (2.0, False, True, (10.0, 0.0, 3.0))
    # A ten-hour run's clock keeps its milliseconds (float64 all the way; float32 would round to 1/256 s).
    late = torch.tensor([1.0, 0.0, 0.0, 36000.123, 0.0, 0.0], dtype=torch.float64)
    assert agree(OtherProcess(1, late), torch.tensor(1.0), False, (0.0, 0.0, 0.0))[3][0] == 36000.123
