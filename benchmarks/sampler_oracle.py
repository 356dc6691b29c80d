"""Benchmark: how far each sampler's samples are from the truth, against network evaluations, on the Gaussian
oracle (x0 ~ N(0.3, 0.5^2), exact denoiser), for the linear and cosine schedules.

Prints one table per schedule (rows: sampler, columns: evaluations; cells: |std - 0.5|), then Heun at 19
evaluations (10 steps) on every timestep grid, and writes benchmarks/results/sampler_oracle.json. This is the
data behind each sampler's recommended steps, and the evidence that no grid brings Heun within 0.02 at <= 20.

    python benchmarks/sampler_oracle.py
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffkit.oracle import gaussian_oracle
from diffkit.sampling import SAMPLERS, heun, run_to_end, sample, sampling_schedule
from diffkit.schedule import cosine, karras, linear

RESULTS = Path(__file__).resolve().parent / "results"
MU, S = 0.3, 0.5
EVALUATIONS = (10, 20, 40, 80, 160)


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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sampler_oracle.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {RESULTS / 'sampler_oracle.json'}")


if __name__ == "__main__":
    main()
