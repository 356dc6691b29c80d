"""benchmarks/train_speed.py (issue 14): the diffusers twin's layout and size, and repeats alternate and keep the
median (seconds; nothing is timed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from diffkit.config import load_config
from diffkit.nn import UNet

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import train_speed  # noqa: E402  (a benchmark script, importable once its folder is on the path)


def parameters(network) -> int:
    return sum(parameter.numel() for parameter in network.parameters())


@pytest.mark.parametrize("preset", ["glyphs32", "fashion28"])
def test_the_ddpm_twin_has_ddpms_layout_our_dropout_and_our_parameter_count(preset):
    model = load_config(preset).model
    twin = train_speed.diffusers_twin(model, 32, "ddpm")
    widths = twin.config.block_out_channels
    assert [width // widths[0] for width in widths] == [1, 2, 2] and twin.config.layers_per_block == 2
    assert [("Attn" in kind) for kind in twin.config.down_block_types] == [False, False, True]
    assert twin.config.dropout == model.dropout
    assert (twin.config.num_class_embeds or 0) == (model.num_classes + 1 if model.num_classes else 0)
    ours = UNet(model).num_parameters()
    assert abs(parameters(twin) - ours) / ours < 0.05


def test_the_same_layout_twin_copies_our_multipliers_and_refuses_a_list_of_blocks():
    model = load_config("glyphs32", ["model.num_res_blocks=2"]).model
    twin = train_speed.diffusers_twin(model, 32, "same")
    widths = twin.config.block_out_channels
    assert tuple(width // widths[0] for width in widths) == model.channel_mults
    assert twin.config.layers_per_block == 2
    with pytest.raises(SystemExit, match="single model.num_res_blocks"):
        train_speed.twin_layout(load_config("glyphs32", ["model.num_res_blocks=[1, 1, 2]"]).model, "same")


def test_the_median_repeat_is_kept_whole_and_failures_are_left_out():
    repeats = [{"images_per_second": 90.0, "peak_rss_mb": 1}, {"error": "killed"},
               {"images_per_second": 70.0, "peak_rss_mb": 2}, {"images_per_second": 80.0, "peak_rss_mb": 3}]
    assert train_speed.median_row(repeats) == {"images_per_second": 80.0, "peak_rss_mb": 3,
                                               "repeats": [90.0, 70.0, 80.0]}
    assert train_speed.median_row(repeats[:1] + repeats[2:3])["images_per_second"] == 70.0  # the lower of two
    assert train_speed.median_row([{"error": "a"}, {"error": "b"}]) == {"error": "b"}


def test_repeats_alternate_diffkit_and_diffusers(monkeypatch):
    calls = []

    def fake(preset, implementation, mode, kind, args):
        calls.append((implementation, kind))
        return {"implementation": implementation, "kind": kind, "images_per_second": float(len(calls))}

    monkeypatch.setattr(train_speed, "run_isolated", fake)
    args = train_speed.argparse.Namespace(presets=["glyphs32"], modes=["fp32"], repeats=3, quick=False,
                                          kinds=list(train_speed.KINDS))
    rows = train_speed.measure_all(args)
    one_round = [("diffkit", "step"), ("diffkit", "loop"), ("diffkit", "sample"), ("diffusers", "step"),
                 ("diffusers", "sample")]
    assert calls == one_round * 3
    assert [(row["implementation"], row["kind"]) for row in rows] == one_round
    assert [row["images_per_second"] for row in rows] == [6.0, 7.0, 8.0, 9.0, 10.0]  # the middle round's


def test_kinds_choose_what_is_measured(monkeypatch):
    calls = []
    monkeypatch.setattr(train_speed, "run_isolated", lambda preset, implementation, mode, kind, args: calls.append(
        (implementation, kind)) or {"implementation": implementation, "kind": kind, "images_per_second": 1.0})
    args = train_speed.argparse.Namespace(presets=["glyphs32"], modes=["fp32+model"], repeats=2, quick=False,
                                          kinds=["sample", "loop"])
    rows = train_speed.measure_all(args)
    assert calls == [("diffkit", "sample"), ("diffkit", "loop"), ("diffusers", "sample")] * 2  # no diffusers loop
    assert [(row["implementation"], row["kind"]) for row in rows] == calls[:3]


def paired_order(monkeypatch, kind: str) -> tuple[list, dict]:
    """paired_sampling.paired over glyphs32 fp32 (two blocks of one call), recording which network ran each block."""
    import paired_sampling

    order = []
    real = paired_sampling.block_seconds

    def recording(setting, work, count):
        order.append((setting.implementation, count, setting.network.training))
        return real(setting, work, count)

    monkeypatch.setattr(paired_sampling, "block_seconds", recording)
    return order, paired_sampling.paired("glyphs32", "fp32", blocks=2, per_block=1, warmup=1, kind=kind)


def test_paired_sampling_alternates_both_networks_in_one_process(monkeypatch):
    import paired_sampling

    order, row = paired_order(monkeypatch, "sample")
    assert order == [("diffkit", 1, False), ("diffusers", 1, False)] * 3  # a warm-up block each, then two blocks
    assert len(row["block_ratios"]) == 2 and row["batch_size"] == 64 and row["kind"] == "sample"
    assert row["allocator"] in ("tuned", "default")
    line = paired_sampling.table([{**row, "diffkit_images_per_second": 300.0, "diffusers_images_per_second": 200.0,
                                   "block_ratios": [1.4, 1.6]}]).splitlines()[-1]
    assert line == "| glyphs32 | fp32 | sample | 300.0 | 200.0 | 1.50 | 1.40-1.60 |"


def test_paired_step_trains_both_networks(monkeypatch):
    order, row = paired_order(monkeypatch, "step")
    assert order == [("diffkit", 1, True), ("diffusers", 1, True)] * 3
    assert row["kind"] == "step" and row["batch_size"] == 64 and all(r > 0 for r in row["block_ratios"])
