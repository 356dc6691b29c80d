"""Latent diffusion end to end: `train` on the cached latents of a tiny autoencoder, the bundle that holds it,
sampling and editing in pixels, export, and the one-sentence refusals (no autoencoder, another one, wrong data)."""

import json
import shutil

import pytest
import torch

import diffkit
from diffkit import train as train_module
from diffkit.config import Config, apply_overrides
from diffkit.bundle import WEIGHTS_FILE, save_weights
from diffkit.encoders import DecodedStep, load_latent_encoder, measure_latent_scale, save_latent_scale
from diffkit.errors import DiffkitError
from diffkit.export import export_bundle
from diffkit.latent_model import AUTOENCODER_DIR, AUTOENCODER_FILES, LATENT_CACHE_DIR, resolve_latent
from diffkit.train import train

from tiny_autoencoder import write_autoencoder
from tiny_run import one_thread

single_thread = pytest.fixture(autouse=True)(one_thread)


def latent_config(autoencoder, data_dir, *overrides: str) -> Config:
    """A tiny latent model: 16x16 synthetic glyphs -> 3 x 4 x 4 latents of the untrained f = 4 autoencoder."""
    config = Config.from_dict({
        "model": {"in_channels": 3, "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1,
                  "attention_levels": [], "num_classes": 4, "groups": 8},
        "diffusion": {"schedule": "cosine", "T": 100},
        "data": {"dataset": "synthetic", "size": 16, "data_dir": str(data_dir), "options": {"count": 32, "classes": 4}},
        "latent": {"autoencoder": str(autoencoder)},
        "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "max_steps": 3, "checkpoint_every": 3,
                  "sample_every": 3, "log_every": 1},
        "sample": {"steps": 3, "n": 4},
    })
    return apply_overrides(config, overrides)


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    """A latent model trained for 3 steps through `train` (the run directory, the autoencoder's source)."""
    root = tmp_path_factory.mktemp("latent")
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        write_autoencoder(root / "ae", size=16)
        result = train(latent_config(root / "ae", root / "data"), root / "run", quiet=True,
                       launch=train_module.Launch(accelerator="cpu"))
    assert result.step == 3
    return root / "run", root / "ae"


def test_training_reads_cached_latents_and_the_run_holds_its_autoencoder(latent_run):
    run, source = latent_run
    for name in AUTOENCODER_FILES:
        assert (run / AUTOENCODER_DIR / name).read_bytes() == (source / name).read_bytes()
    saved = json.loads((run / "config.json").read_text())
    assert saved["latent"]["autoencoder_sha256"] and saved["data"]["size"] == 16
    cached = list((run.parent / "data" / LATENT_CACHE_DIR).glob("latents-*.safetensors"))
    assert len(cached) == 1
    assert list((run / "samples").glob("*.png"))  # the grid was decoded to pixels


def test_latent_bundle_samples_and_edits_in_pixels(latent_run):
    run, source = latent_run
    shutil.rmtree(source.parent / "moved", ignore_errors=True)
    source.rename(source.parent / "moved")  # the bundle needs only its own copy
    try:
        bundle = diffkit.load(run)
        assert bundle.image_shape == (1, 16, 16) and bundle.space_shape == (3, 4, 4)
        steps = list(bundle.sample_steps(2, steps=3))
        assert isinstance(steps[-1], DecodedStep) and steps[-1].latent.x_t.shape == (2, 3, 4, 4)
        assert bundle.sample(2, steps=3, seed=1).shape == (2, 1, 16, 16)
        image = torch.linspace(-1, 1, 256).view(1, 16, 16)
        known = torch.ones(16, 16, dtype=torch.bool)
        known[4:12, 4:12] = False
        *_, last = bundle.inpaint_steps(image, known, steps=3, jump=1)
        assert last.x_t.shape == (1, 1, 16, 16) and torch.equal(last.x_t[0][:, known], image[:, known])
        *_, redrawn = bundle.img2img_steps(image, 0.5, 2, steps=3)
        assert redrawn.x_t.shape == (2, 1, 16, 16)
        assert bundle.interpolate(image, -image, frames=3, steps=3, refine=0).shape == (3, 1, 16, 16)
        assert bundle.guidance_sweep([0.0, 2.0], 2, steps=3).shape == (4, 1, 16, 16)
    finally:
        (source.parent / "moved").rename(source)


def test_export_carries_the_autoencoder(latent_run, tmp_path):
    run, _ = latent_run
    out = export_bundle(run, tmp_path / "export", command="diffkit export")
    for name in AUTOENCODER_FILES:
        assert (out / AUTOENCODER_DIR / name).read_bytes() == (run / AUTOENCODER_DIR / name).read_bytes()
    original, exported = diffkit.load(run), diffkit.load(out)
    for key, value in exported.network.state_dict().items():
        torch.testing.assert_close(value, original.network.state_dict()[key].half().float(), rtol=0, atol=0)
    assert exported.sample(2, steps=3).shape == (2, 1, 16, 16)


def test_a_latent_bundle_without_or_with_another_autoencoder_is_refused(latent_run, tmp_path):
    run, _ = latent_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("state.ckpt", "samples", ".lock"))
    shutil.rmtree(copy / AUTOENCODER_DIR)
    with pytest.raises(DiffkitError, match="holds no autoencoder"):
        diffkit.load(copy)
    shutil.copytree(run / AUTOENCODER_DIR, copy / AUTOENCODER_DIR)
    encoder = load_latent_encoder(copy / AUTOENCODER_DIR)
    with torch.no_grad():  # other weights, with their own measured scale: a valid autoencoder, but not this one
        for parameter in encoder.autoencoder.parameters():
            parameter.add_(0.01)
    save_weights(encoder.autoencoder, copy / AUTOENCODER_DIR / WEIGHTS_FILE)
    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    save_latent_scale(copy / AUTOENCODER_DIR, measure_latent_scale(encoder.autoencoder, images))
    with pytest.raises(DiffkitError, match="use the autoencoder the model was trained with"):
        diffkit.load(copy)


def test_an_autoencoder_for_other_images_is_refused_in_one_sentence(tmp_path):
    write_autoencoder(tmp_path / "ae16", size=16)
    write_autoencoder(tmp_path / "ae16rgb", size=16, channels=3)
    config = latent_config(tmp_path / "ae16", tmp_path / "data")
    grey8 = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    with pytest.raises(DiffkitError, match="trained on 16 px images, not 8 px"):
        resolve_latent(apply_overrides(config, ["data.size=none"]), grey8, tmp_path / "ae16")
    grey16 = torch.zeros(4, 1, 16, 16, dtype=torch.uint8)
    with pytest.raises(DiffkitError, match="trained on 3-channel images, not 1-channel"):
        resolve_latent(config, grey16, tmp_path / "ae16rgb")
    with pytest.raises(DiffkitError, match="set model.in_channels=3"):
        resolve_latent(apply_overrides(config, ["model.in_channels=1"]), grey16, tmp_path / "ae16")
    # f = 4 does not divide 18: refused by the autoencoder's own check (data trained at 18 px cannot exist).
    write_autoencoder(tmp_path / "ae18", size=16)
    record = json.loads((tmp_path / "ae18" / "config.json").read_text())
    record["data"]["size"] = 18
    (tmp_path / "ae18" / "config.json").write_text(json.dumps(record))
    with pytest.raises(DiffkitError, match="does not divide that size"):
        resolve_latent(apply_overrides(config, ["data.size=none"]), torch.zeros(4, 1, 18, 18, dtype=torch.uint8),
                       tmp_path / "ae18")


def test_the_latent_glyph_preset_fits_the_glyph_autoencoder_preset():
    from diffkit.autoencoder_config import load_autoencoder_config
    from diffkit.config import load_config

    latent, autoencoder = load_config("glyphs128-latent"), load_autoencoder_config("glyphs128-ae")
    assert latent.latent.autoencoder == "runs/glyphs128-ae"
    assert latent.model.in_channels == autoencoder.model.latent_channels
    assert latent.data.size == autoencoder.data.size == 128 and latent.data.dataset == autoencoder.data.dataset
    assert latent.data.size // autoencoder.model.factor == 32


def test_a_missing_autoencoder_is_named_before_the_data_loads(tmp_path):
    config = latent_config(tmp_path / "nowhere", tmp_path / "data")
    with pytest.raises(DiffkitError, match="nowhere \\(latent.autoencoder\\) does not exist"):
        train(config, tmp_path / "run", quiet=True, launch=train_module.Launch(accelerator="cpu"))


@pytest.mark.slow  # UMAP's numba compilation: ~80 s in a fresh process on the loaded 2-core CPU, once per process
def test_viz_map_draws_latents_beside_pixels(latent_run, tmp_path, capsys, bundle_dir):
    from diffkit.cli import main

    run, _ = latent_run
    out = tmp_path / "map.png"
    assert main(["viz", "map", str(run), "--space", "latent", "--dataset", "synthetic", "--samples", "4",
                 "--trajectories", "2", "--steps", "3", "--epochs", "20", "--out", str(out)]) == 0
    assert "images and their latents" in capsys.readouterr().out and out.stat().st_size > 1000
    assert main(["viz", "map", str(bundle_dir), "--space", "latent", "--dataset", "synthetic",
                 "--out", str(tmp_path / "pixel.png")]) == 2
    assert "pixel-space model" in capsys.readouterr().err


def test_a_latent_run_resumes_with_its_own_autoencoder_copy(latent_run, tmp_path):
    run, _ = latent_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    from diffkit.config import load_config

    # The source directory named in the config is not needed any more: the run holds the autoencoder.
    saved = json.loads((copy / "config.json").read_text())
    saved["latent"]["autoencoder"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(saved))
    config = load_config(copy / "config.json", ["train.max_steps=4"])
    result = train(config, copy, resume=True, quiet=True, launch=train_module.Launch(accelerator="cpu"))
    assert result.step == 4 and diffkit.load(copy).sample(1, steps=2).shape == (1, 1, 16, 16)


def test_a_latent_model_s_grid_is_fitted_to_its_latents(tmp_path):
    from diffkit.grids import data_scales, fit_grids

    write_autoencoder(tmp_path / "ae", size=16)  # no training: the grid needs only the config and the encoder
    config = latent_config(tmp_path / "ae", tmp_path / "data")
    scales = data_scales(config, load_latent_encoder(tmp_path / "ae"))  # the 3 x 4 x 4 latents' spectrum
    assert scales.ndim == 1 and bool((scales > 0).all())
    assert list(fit_grids(config, [("dpmpp_2m", 3)], scales)) == ["dpmpp_2m/3"]
    with pytest.raises(DiffkitError, match="latents"):
        data_scales(config)


def test_eps_on_latents_with_a_vanishing_terminal_snr_is_warned_about(tmp_path):
    # The cosine schedule ends at alpha_bar_T ~ 2.4e-9 (T = 1000): an eps model's x0 guess at the first sampling
    # step multiplies its error by 1/sqrt(alpha_bar_T); pixels are clipped to [-1, 1], latents are not.
    from diffkit.latent_model import eps_amplification_warning
    from diffkit.schedule import cosine

    eps = latent_config(tmp_path / "ae", tmp_path, "diffusion.T=1000")
    warning = eps_amplification_warning(eps)
    gain = cosine(1000).alpha_bar[-1].rsqrt().item()
    assert gain > 10_000 and f"{gain:,.0f}" in warning and "diffusion.prediction=v" in warning
    assert eps_amplification_warning(apply_overrides(eps, ["diffusion.prediction=v"])) is None
    assert eps_amplification_warning(apply_overrides(eps, ["latent.autoencoder=none"])) is None  # pixels are clipped
