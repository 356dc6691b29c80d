"""Benchmark: how far each sampler's samples are from the truth, against network evaluations, on the Gaussian
oracle (x0 ~ N(0.3, 0.5^2), exact denoiser), for the linear and cosine schedules.

Prints one table per schedule (rows: sampler, columns: evaluations; cells: |std - 0.5|), then Heun at 19
evaluations (10 steps) on every timestep grid, then the few-step table: on a spectrum of scales (std 0.05 to 0.6)
the worst |output std / true std - 1| of the multistep samplers at 10 and 20 steps on every spacing and on the
grid fitted to 8 of those scales (grids.py; checked on 33), and writes benchmarks/results/sampler_oracle.json.
This is the data behind each sampler's recommended steps, the evidence that no grid brings Heun within 0.02 at
<= 20 evaluations, and the case for the fitted grid (DESIGN.md "Few-step grids").

    python benchmarks/sampler_oracle.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffkit.grids import fit_grid, worst_std_error
from diffkit.oracle import gaussian_oracle
from diffkit.sampling import SAMPLERS, heun, run_to_end, sample, sampling_schedule
from diffkit.schedule import SPACINGS, cosine, karras, linear

RESULTS = Path(__file__).resolve().parent / "results"
MU, S = 0.3, 0.5
EVALUATIONS = (10, 20, 40, 80, 160)
FIT_SCALES = torch.logspace(torch.log10(torch.tensor(0.05)), torch.log10(torch.tensor(0.6)), 8, dtype=torch.float64)
CHECK_SCALES = torch.logspace(torch.log10(torch.tensor(0.05)), torch.log10(torch.tensor(0.6)), 33, dtype=torch.float64)


def std_error(schedule, name: str, evaluations: int) -> float | None:
    """|std - S| of 32,768 oracle samples drawn with `evaluations` network calls (None if not reachable)."""
    sampler = SAMPLERS[name]
    steps = evaluations // sampler.evaluations_per_step
    if steps < 1:
        return None
    samples = sample(gaussian_oracle(MU, S, schedule), schedule, (512, 1, 8, 8), sampler=name, steps=steps,
                     spacing=sampler.recommended_spacing, generator=torch.Generator().manual_seed(0))
    return abs(float(samples.std()) - S)


def heun_grids(schedule) -> dict[str, float]:
    """|std - S| of Heun with 10 steps (19 evaluations) on each spacing and on Karras grids of several rho."""
    grids = {spacing: sampling_schedule(schedule, 10, spacing) for spacing in ("trailing", "uniform", "leading")}
    grids.update({f"karras rho={rho}": karras(schedule, 10, rho) for rho in (3, 5, 7, 10, 20, 50)})
    x_T = torch.randn(512, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    oracle = gaussian_oracle(MU, S, schedule)
    return {name: abs(float(run_to_end(heun(oracle, x_T, grid)).std()) - S) for name, grid in grids.items()}


def few_step_errors(schedule, schedule_name: str, results: dict) -> None:
    """Worst std error over CHECK_SCALES of each multistep sampler at 10 and 20 steps, on every spacing and fitted."""
    columns = (*SPACINGS, "fitted")
    print(f"\n{schedule_name} schedule: worst |std / s - 1| over s = 0.05..0.6 (exact linear factor)")
    print(f"{'sampler/steps':<16}" + "".join(f"{name:>10}" for name in columns))
    for name in ("dpmpp_2m", "dpmpp_3m", "unipc"):
        for steps in (10, 20):
            timesteps = fit_grid(name, steps, schedule, FIT_SCALES)
            grids = {spacing: sampling_schedule(schedule, steps, spacing) for spacing in SPACINGS}
            grids["fitted"] = sampling_schedule(schedule, timesteps=timesteps)
            errors = {column: worst_std_error(name, schedule, grid, CHECK_SCALES) for column, grid in grids.items()}
            results[f"{schedule_name}/spectrum/{name}/{steps}"] = {**errors, "fitted_timesteps": timesteps.tolist()}
            print(f"{name + '/' + str(steps):<16}" + "".join(f"{errors[column]:>10.4f}" for column in columns))
            if name == "dpmpp_2m":
                print(f"{'':<16}fitted grid: " + ", ".join(f"{t:.1f}" for t in timesteps.tolist()))


def main() -> None:
    """Measure every sampler at every evaluation budget on both schedules."""
    results = {}
    schedules = (("linear", linear(1000)), ("cosine", cosine(1000)))
    for schedule_name, schedule in schedules:
        print(f"\n{schedule_name} schedule: |std - {S}| by network evaluations")
        print(f"{'sampler':<16}" + "".join(f"{n:>9}" for n in EVALUATIONS))
        for name in SAMPLERS:
            errors = [std_error(schedule, name, n) for n in EVALUATIONS]
            results[f"{schedule_name}/{name}"] = dict(zip(map(str, EVALUATIONS), errors))
            print(f"{name:<16}" + "".join(f"{e:>9.4f}" if e is not None else f"{'-':>9}" for e in errors))
    for schedule_name, schedule in schedules:
        errors = heun_grids(schedule)
        results[f"{schedule_name}/heun-19-evaluations"] = errors
        print(f"\nHeun, 19 evaluations, {schedule_name}: " + ", ".join(f"{k} {v:.4f}" for k, v in errors.items()))
    for schedule_name, schedule in schedules:
        few_step_errors(schedule, schedule_name, results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampler_oracle.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'sampler_oracle.json'}")


if __name__ == "__main__":
    main()
