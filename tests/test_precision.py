"""train.precision: "auto" follows the CPU's native bf16 flags; old configs' train.bf16 still reads."""

import json

import pytest

from diffkit.config import Config, load_config
from diffkit.precision import cpu_bf16_flags, resolve_precision

EPYC_GENOA = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n"
XEON_SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


def cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, flags, fabric", [
    (EPYC_GENOA, ["avx512_bf16"], "bf16-mixed"),
    (XEON_SKYLAKE, [], "32-true"),
    (SAPPHIRE_RAPIDS, ["avx512_bf16", "amx_bf16"], "bf16-mixed"),
])
def test_auto_uses_bf16_only_with_native_bf16(tmp_path, text, flags, fabric):
    path = cpuinfo(tmp_path, text)
    assert cpu_bf16_flags(path) == flags
    chosen = resolve_precision("auto", "cpu", path)
    assert chosen.fabric == fabric
    assert ("AVX512_BF16" in chosen.reason) == ("avx512_bf16" in flags)


def test_explicit_choices_and_a_missing_cpuinfo(tmp_path):
    path = cpuinfo(tmp_path, EPYC_GENOA)
    assert resolve_precision("fp32", "cpu", path).fabric == "32-true"
    assert resolve_precision("bf16", "cpu", cpuinfo(tmp_path, XEON_SKYLAKE)).fabric == "bf16-mixed"
    missing = resolve_precision("auto", "cpu", tmp_path / "absent")
    assert missing.fabric == "32-true" and missing.name == "fp32"


def test_presets_default_to_auto():
    for preset in ("glyphs32", "fashion28", "cifar32", "glyphs32-text"):
        assert load_config(preset).train.precision == "auto"


@pytest.mark.parametrize("old, new", [(True, "bf16"), (False, "fp32")])
def test_a_config_written_with_train_bf16_still_reads(old, new):
    data = json.loads(json.dumps(load_config("glyphs32").to_dict()))
    del data["train"]["precision"]
    data["train"]["bf16"] = old
    assert Config.from_dict(data).train.precision == new
