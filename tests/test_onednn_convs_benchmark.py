"""benchmarks/onednn_convs.py (issue 14): oneDNN's verbose lines give each convolution's channel blocking, the padded
share of its arithmetic follows from the channel counts, and a smoke run reads both networks' kernels."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import onednn_convs  # noqa: E402  (a benchmark script, importable once its folder is on the path)


def line(implementation: str, pass_kind: str, src: str, dst: str, problem: str, milliseconds: float) -> str:
    """A convolution's exec line in oneDNN v3's verbose format."""
    return (f"onednn_verbose,v1,primitive,exec,cpu,convolution,{implementation},{pass_kind},"
            f"src:f32:a:blocked:{src}::f0 wei:f32:a:blocked:ABcd8b8a::f0 bia:f32:a:blocked:a::f0 "
            f"dst:f32:a:blocked:{dst}::f0,attr-scratchpad:user,alg:convolution_direct,{problem},{milliseconds}")


AVX2_24 = line("jit:avx2", "backward_weights", "aBcd8b", "aBcd8b", "mb64_ic24oc24_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1",
               10.0)
AVX512_24 = line("jit:avx512_core", "forward_training", "aBcd16b", "aBcd16b",
                 "mb64_ic24oc24_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1", 8.0)
AVX512_FIRST = line("jit:avx512_core", "forward_training", "abcd", "aBcd16b",
                    "mb64_ic1oc24_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1", 4.0)
NHWC_24 = line("brgconv:avx512_core", "forward_training", "acdb", "acdb",
               "mb64_ic24oc24_ih32oh32kh3sh1dh0ph1_iw32ow32kw3sw1dw0pw1", 6.0)
REORDER = ("onednn_verbose,v1,primitive,exec,cpu,reorder,jit:blk,undef,src:f32::blocked:abcd::f0 "
           "dst:f32::blocked:aBcd8b::f0,attr-scratchpad:user,,64x24x32x32,2.5")


def test_a_multiple_of_the_block_pads_nothing():
    call = onednn_convs.parse_call(AVX2_24)
    assert (call.kind, call.implementation, call.pass_kind) == ("convolution", "jit:avx2", "backward_weights")
    assert call.channels == (24, 24) and call.blocks == (8, 8) and call.milliseconds == 10.0
    assert call.padded_fraction == 0.0


def test_24_channels_in_blocks_of_16_do_the_work_of_32():
    assert onednn_convs.parse_call(AVX512_24).padded_fraction == pytest.approx(1 - 24 * 24 / (32 * 32))


def test_a_plain_input_image_pads_only_the_output_channels():
    call = onednn_convs.parse_call(AVX512_FIRST)
    assert call.blocks == (1, 16)
    assert call.padded_fraction == pytest.approx(1 - 24 / 32)


def test_channels_last_data_is_not_blocked():
    call = onednn_convs.parse_call(NHWC_24)
    assert call.blocks == (1, 1) and call.padded_fraction == 0.0


def test_other_lines_are_not_calls_and_the_isa_comes_from_the_info_line():
    info = ["onednn_verbose,v1,info,oneDNN v3.12.0 (commit x)", "onednn_verbose,v1,info,cpu,isa:Intel AVX2",
            "{\"parameters\": 1}"]
    assert all(onednn_convs.parse_call(text) is None for text in info)
    assert onednn_convs.instruction_set(info) == "Intel AVX2"
    assert onednn_convs.instruction_set(info[:1]) == "unknown"


def test_the_summary_adds_times_by_kind_and_weights_padding_by_time():
    found = onednn_convs.summary([AVX2_24, AVX512_24, AVX512_FIRST, NHWC_24, REORDER])
    assert found["calls"] == 5
    assert found["milliseconds"] == pytest.approx({"convolution": 28.0, "reorder": 2.5})
    assert found["padding_milliseconds"] == pytest.approx(8.0 * (1 - 576 / 1024) + 4.0 * 0.25)
    assert found["padded_channels"] == {"24->24 as 32->32": 8.0, "1->24 as 1->32": 4.0}
    assert found["convolution_implementations"] == pytest.approx(
        {"jit:avx2": 10.0, "jit:avx512_core": 12.0, "brgconv:avx512_core": 6.0})


def test_a_smoke_run_reads_both_networks_kernels(tmp_path):
    rows = onednn_convs.main(["--quick", "--presets", "glyphs32", "--out", str(tmp_path)])
    assert [row["implementation"] for row in rows] == ["diffkit", "diffusers"]
    for row in rows:
        assert row["isa"] != "unknown" and row["calls"] > 0 and row["parameters"] > 0
        assert row["milliseconds"]["convolution"] > 0
        assert 0 <= row["padding_milliseconds"] <= row["milliseconds"]["convolution"]
    written = json.loads((tmp_path / "onednn_convs_quick.json").read_text())
    assert [row["implementation"] for row in written["rows"]] == ["diffkit", "diffusers"]


def test_the_machine_line_names_the_family_the_vector_isa_and_bf16():
    from quality import machine_description

    from diffkit.precision import cpu_bf16_flags

    described = machine_description()
    assert torch.backends.cpu.get_cpu_capability() in described  # "AVX512", "AVX2", ...
    flags = cpu_bf16_flags()
    assert (" and ".join(flag.upper() for flag in flags) if flags else "no native bf16") in described
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "cpu family" in cpuinfo.read_text():
        assert "(family " in described and ", model " in described

