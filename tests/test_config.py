"""Config: sections round-trip, presets load, overrides are typed, mistakes name the key."""

import json
from pathlib import Path

import pytest

from diffkit.config import Config, apply_overrides, load_config, parse_value, save_config
from diffkit.errors import DiffkitError
from diffkit.nn.unet import UNetConfig

from tiny_run import TINY, TINY_TOML, tiny_config

PRESETS = Path(__file__).resolve().parents[1] / "src" / "diffkit" / "configs"


def test_round_trip_through_json(tmp_path):
    config = tiny_config()
    path = save_config(config, tmp_path / "config.json")
    again = load_config(path)
    assert again == config
    assert isinstance(again.model, UNetConfig) and again.model.channel_mults == (1, 2)
    assert Config.from_dict(json.loads(path.read_text())) == config


def test_toml_and_dict_give_the_same_config(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    assert load_config(tmp_path / "tiny.toml") == Config.from_dict(TINY)


@pytest.mark.parametrize("name", ["glyphs32", "fashion28", "cifar32", "folder"])
def test_presets_load(name):
    config = load_config(PRESETS / f"{name}.toml")
    assert config.data.size is not None and config.model.in_channels in (1, 3)


def test_fashion_preset_is_class_conditional_with_label_dropout():
    config = load_config(PRESETS / "fashion28.toml")
    assert config.model.num_classes == 10 and config.train.p_uncond == 0.1


def test_overrides_are_converted_to_field_types():
    config = tiny_config("train.lr=2e-4", "train.max_minutes=1", "model.channel_mults=[1, 2, 2]",
                         "diffusion.schedule=linear", "train.grad_clip=none", "data.options.count=32",
                         "train.precision=bf16", "sample.sampler=\"ddpm\"", "model.num_res_blocks=[1, 2, 2]")
    assert config.train.lr == 2e-4 and config.model.num_res_blocks == (1, 2, 2)
    assert config.train.max_minutes == 1.0 and isinstance(config.train.max_minutes, float)
    assert config.model.channel_mults == (1, 2, 2)
    assert config.diffusion.schedule == "linear"
    assert config.train.grad_clip is None
    assert config.data.options == {"count": 32, "classes": 4}
    assert config.train.precision == "bf16" and config.sample.sampler == "ddpm"


def test_parse_value_reads_toml_and_bare_words():
    assert parse_value("3") == 3 and parse_value("3.5") == 3.5 and parse_value("true") is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("cosine") == "cosine" and parse_value("None") is None


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(DiffkitError, match=r"train\.lrr.*did you mean 'lr'"):
        tiny_config("train.lrr=1e-3")


def test_unknown_section_is_named():
    with pytest.raises(DiffkitError, match="'trian'.*did you mean 'train'"):
        tiny_config("trian.lr=1e-3")


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=abc", r"train\.batch_size='abc'.*integer"),
    ("train.batch_size=2.5", r"train\.batch_size=2\.5.*integer"),
    ("train.ema_warmup=1", r"train\.ema_warmup=1.*true or false"),
    ("train.precision=fp16", r"train\.precision='fp16'.*unknown"),
    ("model.channel_mults=[1, 2.5]", r"model\.channel_mults.*list of integers"),
    ("model.num_res_blocks=two", r"model\.num_res_blocks='two'.*an integer or a list of integers"),
    ("train.max_steps=many", r"train\.max_steps='many'.*an integer or none"),
])
def test_bad_values_are_named_with_the_expected_type(override, words):
    with pytest.raises(DiffkitError, match=words):
        tiny_config(override)


@pytest.mark.parametrize("override, words", [
    ("train.ema_decay=1.5", r"train\.ema_decay=1\.5.*\[0, 1\)"),
    ("train.batch_size=0", r"train\.batch_size=0.*at least 1"),
    ("sample.steps=500", r"sample\.steps=500.*diffusion\.T=100"),
    ("diffusion.schedule=cosin", r"'cosin'.*did you mean 'cosine'.*linear, cosine, sigmoid"),
    ("diffusion.prediction=noise", r"'noise'.*eps, x0, v"),
    ("sample.sampler=magic", r"'magic'.*ddpm"),
    ("model.num_heads=3", r"num_heads=3"),
])
def test_out_of_range_values_are_refused(override, words):
    with pytest.raises(DiffkitError, match=words):
        tiny_config(override)


@pytest.mark.parametrize("override", ["trainlr=1", "train.lr", "train..lr=1", "train.lr.x=1"])
def test_malformed_overrides_are_refused(override):
    with pytest.raises(DiffkitError):
        tiny_config(override)


def test_unknown_key_in_a_preset_file_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nlearning_rate = 1e-3\n")
    with pytest.raises(DiffkitError, match=r"train\.learning_rate"):
        load_config(path)


def test_missing_and_broken_files_are_refused(tmp_path):
    with pytest.raises(DiffkitError, match="does not exist"):
        load_config(tmp_path / "nothing.toml")
    (tmp_path / "broken.toml").write_text("[train\n")
    with pytest.raises(DiffkitError, match="Cannot parse"):
        load_config(tmp_path / "broken.toml")


def test_overrides_leave_the_original_untouched():
    config = tiny_config()
    changed = apply_overrides(config, ["train.lr=0.5"])
    assert config.train.lr == 1e-3 and changed.train.lr == 0.5


def test_a_bare_preset_name_means_the_shipped_preset_from_any_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # not the repository root
    assert load_config("glyphs32") == load_config("glyphs32.toml") == load_config(PRESETS / "glyphs32.toml")
    (tmp_path / "glyphs32.toml").write_text("[train]\nlr = 0.5\n")  # a file of that name here wins
    assert load_config("glyphs32.toml").train.lr == 0.5
    with pytest.raises(DiffkitError, match="glyphs3 does not exist.*preset: cifar32, fashion28, folder, glyphs128-ae, glyphs128-latent, glyphs32"):
        load_config("glyphs3")


def test_presets_ship_as_package_data_and_the_repository_path_still_works():
    import tomllib

    with open(Path(__file__).resolve().parents[1] / "pyproject.toml", "rb") as handle:
        package_data = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["diffkit"]
    assert "configs/*.toml" in package_data and (PRESETS / "glyphs32.toml").is_file()
    repository_path = Path(__file__).resolve().parents[1] / "configs" / "fashion28.toml"
    assert load_config(repository_path) == load_config("fashion28")


@pytest.mark.parametrize("override", ["train.lr=nan", "train.lr=inf", "train.max_minutes=inf",
                                      "train.grad_clip=-inf", "diffusion.min_snr_gamma=nan"])
def test_non_finite_numbers_are_refused(override):
    key = override.partition("=")[0].replace(".", r"\.")
    with pytest.raises(DiffkitError, match=rf"{key}=.*finite"):
        tiny_config(override)


def test_every_spacing_the_samplers_take_is_a_valid_sample_spacing():
    from diffkit.sampling import SAMPLING_SPACINGS

    assert "karras" in SAMPLING_SPACINGS
    for spacing in SAMPLING_SPACINGS:
        assert tiny_config(f"sample.spacing={spacing}").sample.spacing == spacing
    with pytest.raises(DiffkitError, match="'karas'.*did you mean 'karras'"):
        tiny_config("sample.spacing=karas")


def test_sections_validate_themselves_in_one_style():
    """Every section refuses bad values when built directly, with the same sentence as a config override."""
    from diffkit.config import SampleConfig, TrainConfig
    from diffkit.nn.unet import UNetConfig

    for build, words in [(lambda: TrainConfig(lr=float("inf")), r"Config value train\.lr=inf is out of range"),
                         (lambda: SampleConfig(steps=0), r"Config value sample\.steps=0 is out of range"),
                         (lambda: UNetConfig(num_res_blocks=0), r"Config value model\.num_res_blocks=0 is out of range")]:
        with pytest.raises(DiffkitError, match=words):
            build()
