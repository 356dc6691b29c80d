"""benchmarks/op_share.py (issue 14): operators go to the right kind, a smoke run profiles both networks, and the
bound is diffusers' step over diffkit's arithmetic."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tiny_run import one_thread

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import op_share  # noqa: E402  (a benchmark script, importable once its folder is on the path)

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.mark.parametrize("name, kind", [
    ("aten::mkldnn_convolution", "convolution"), ("aten::convolution_backward", "convolution"),
    ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("aten::bmm", "matmul"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "matmul"), ("aten::native_group_norm", "normalisation"),
    ("aten::native_group_norm_backward", "normalisation"), ("aten::_foreach_mul_", "optimizer"),
    ("Optimizer.step#AdamW.step", "optimizer"), ("aten::silu", "other"), ("aten::copy_", "other"),
    ("aten::linalg_vector_norm", "other"), ("autograd::engine::evaluate_function: SiluBackward0", "other"),
    ("aten::normal_", "other"), ("ConvolutionBackward0", "other"), ("AddmmBackward0", "other"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "other"), ("NativeGroupNormBackward0", "other"),
    ("aten::native_layer_norm", "normalisation"),
])
def test_operators_go_to_their_kind(name, kind):
    assert op_share.kind_of(name) == kind


class Event:
    """A profiler event: its name and its parent on the CPU."""

    def __init__(self, name: str, parent: "Event | None" = None, microseconds: float = 0.0) -> None:
        self.name, self.cpu_parent, self.self_cpu_time_total = name, parent, microseconds


def test_everything_under_the_optimizers_step_is_the_optimizers():
    step = Event("Optimizer.step#AdamW.step", microseconds=100.0)
    events = [step, Event("aten::addcdiv_", Event("aten::something", step), 300.0),
              Event("aten::mkldnn_convolution", microseconds=2000.0), Event("aten::silu", microseconds=600.0)]
    assert op_share.seconds_by_kind(events, steps=2) == pytest.approx(
        {"convolution": 1e-3, "matmul": 0.0, "normalisation": 0.0, "optimizer": 2e-4, "other": 3e-4})


def test_a_smoke_run_profiles_both_networks_and_writes_the_bound(tmp_path):
    rows = op_share.main(["--quick", "--presets", "glyphs32", "--modes", "fp32", "--out", str(tmp_path)])
    assert [row["implementation"] for row in rows] == ["diffkit", "diffusers"]
    for row in rows:
        assert sum(row["share"].values()) == pytest.approx(1.0)
        assert all(row["seconds"][kind] > 0 for kind in ("convolution", "matmul", "normalisation", "optimizer"))
        assert row["arithmetic_seconds"] == pytest.approx(sum(row["seconds"][k] for k in op_share.ARITHMETIC))
    written = json.loads((tmp_path / "op_share_quick.json").read_text())
    ours, theirs = rows
    assert written["bounds"][0]["bound"] == pytest.approx(theirs["step_seconds"] / ours["arithmetic_seconds"])
    assert written["bounds"][0]["speedup"] == pytest.approx(theirs["step_seconds"] / ours["step_seconds"])


def test_compiled_modes_are_refused():
    with pytest.raises(SystemExit, match="hide their operators"):
        op_share.parse_arguments(["--modes", "bf16+blocks"])
