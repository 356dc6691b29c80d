"""`diffkit eval`: a tiny bundle evaluated end to end, two-set mode, classifier training and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_run import one_thread, tiny_config

from diffkit.bundle import load, save_bundle
from diffkit.cli import main
from diffkit.errors import DiffkitError
from diffkit.evaluate.classifier import save_classifier
from diffkit.evaluate.metrics import fid_from_features
from diffkit.evaluate.protocol import (
    Protocol,
    compare_features,
    evaluate_bundle,
    generate_samples,
    load_domain_model,
    parse_metrics,
    train_dataset_classifier,
)
from diffkit.nn.unet import UNet

single_thread = pytest.fixture(autouse=True)(one_thread)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny untrained class-conditional bundle and a tiny classifier trained on its synthetic dataset."""
    directory = tmp_path_factory.mktemp("eval")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = tiny_config()
        torch.manual_seed(0)
        network = UNet(config.model)
        with torch.no_grad():  # the UNet's output layer starts at zero: perturb it so eps depends on x_t and y
            for parameter in network.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape))
        save_bundle(directory / "run", config, network)
        model, record = train_dataset_classifier(config.data, steps=30, width=8, batch_size=32)
        save_classifier(model, directory / "classifier", **record)
    finally:
        torch.set_num_threads(threads)
    return directory


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    """Reference statistics go to a fresh data directory per test."""
    monkeypatch.setenv("DIFFKIT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_on_a_bundle_writes_the_protocol_and_all_metrics(workspace, data_dir, capsys):
    run, classifier = workspace / "run", workspace / "classifier"
    code, out, err = run_cli("eval", str(run), "--metrics", "fid,kid,pr,accuracy,nll,memorisation", "--n", "24",
                             "--steps", "3", "--extractor", "domain", "--classifier", str(classifier),
                             "--nll-steps", "5", "--nll-n", "8", "--batch-size", "10", "--guidance", "2",
                             capsys=capsys)
    assert code == 0, err
    record = json.loads((run / "eval.json").read_text())
    assert record["samples"] == 24 and record["sampler"] == "dpmpp_2m" and record["steps"] == 3
    assert record["guidance"] == 2.0 and record["extractor"] == "domain" and record["reference_split"] == "test"
    assert record["reference_count"] == 64 and record["nll_steps"] == 5 and record["nll_images"] == 8
    assert record["classifier"]["sha256"] == load_domain_model(classifier).sha256
    results = record["results"]
    for name in ("fid", "kid", "kid_std", "precision", "recall", "density", "coverage", "accuracy",
                 "nll_bits_per_dim", "memorised_fraction"):
        assert name in results and np.isfinite(results[name]), name
        assert f"{name} " in out  # the printed table
    assert 0 <= results["accuracy"] <= 1 and results["fid"] >= 0 and results["nll_bits_per_dim"] > 0
    assert (run / "memorisation.png").is_file()
    statistics = list((data_dir / "fid-stats").glob("synthetic-8-test-domain-*-64.npz"))
    assert len(statistics) == 1


def test_evaluation_fid_is_the_fid_of_the_drawn_samples(workspace):
    """The library path recomputed by hand: same samples (same seed), same reference, same FID."""
    bundle = load(workspace / "run")
    classifier = load_domain_model(workspace / "classifier")
    protocol = Protocol(metrics=("fid", "accuracy"), n=20, steps=2, extractor="domain", batch_size=8, seed=3)
    evaluation = evaluate_bundle(bundle, protocol, classifier)
    samples, labels = generate_samples(bundle, 20, sampler="dpmpp_2m", steps=2, spacing="trailing", seed=3,
                                       batch_size=8)
    assert torch.equal(samples, evaluation.samples)
    assert torch.equal(labels, torch.arange(20) % 4)  # classes cycle over all samples, not per batch
    guided, _ = generate_samples(bundle, 20, sampler="dpmpp_2m", steps=2, spacing="trailing", seed=3,
                                 batch_size=8, guidance=3.0)
    assert not torch.equal(guided, samples)  # the guidance scale reaches the sampler
    from diffkit.evaluate.classifier import features, predict
    from diffkit.evaluate.protocol import load_split

    reference = load_split(bundle.config.data, "test").images
    expected = fid_from_features(features(classifier.model, samples), features(classifier.model, reference))
    assert evaluation.record["results"]["fid"] == pytest.approx(expected, rel=1e-6)
    accuracy = (predict(classifier.model, samples) == labels).double().mean().item()
    assert evaluation.record["results"]["accuracy"] == pytest.approx(accuracy)


def test_two_set_mode_compares_folders_and_npz(workspace, tmp_path, capsys):
    from diffkit.images import save_image_array

    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(30, 1, 8, 8, generator=generator) * 255).to(torch.uint8)
    folder = tmp_path / "real"
    folder.mkdir()
    for index, image in enumerate(images):
        save_image_array(image.permute(1, 2, 0).numpy(), folder / f"{index:03d}.png")
    np.savez(tmp_path / "fake.npz", images=images.numpy())
    out = tmp_path / "compare.json"
    code, printed, err = run_cli("eval", "--real", str(folder), "--fake", str(tmp_path / "fake.npz"), "--metrics",
                                 "fid,pr", "--extractor", "domain", "--classifier", str(workspace / "classifier"),
                                 "--out", str(out), capsys=capsys)
    assert code == 0, err
    results = json.loads(out.read_text())["results"]
    # The folder holds exactly the .npz's images: FID ~0, precision and recall 1.
    assert abs(results["fid"]) < 1e-6 and results["precision"] == 1 and results["recall"] == 1
    assert "fid" in printed


@pytest.mark.parametrize("arguments, words", [
    (["--metrics", "fid,sharpness"], ["'sharpness'", "fid, kid, pr, accuracy, nll, memorisation"]),
    (["--metrics", "accuracy"], ["classifier", "--classifier"]),
])
def test_bad_input_is_one_sentence_and_exit_2(workspace, capsys, arguments, words):
    code, _, err = run_cli("eval", str(workspace / "run"), "--n", "4", *arguments, capsys=capsys)
    assert code == 2
    message = err.strip()
    assert message.startswith("diffkit: error:") and message.count("\n") == 0
    for word in words:
        assert word in message


def test_accuracy_on_an_unconditional_model_is_refused(tmp_path, workspace):
    config = tiny_config("model.num_classes=0")
    torch.manual_seed(0)
    save_bundle(tmp_path / "plain", config, UNet(config.model))
    with pytest.raises(DiffkitError, match="unconditional"):
        evaluate_bundle(load(tmp_path / "plain"), Protocol(metrics=("accuracy",), n=4),
                        load_domain_model(workspace / "classifier"))


def test_missing_dataset_is_one_sentence(tmp_path, capsys):
    config = tiny_config("data.dataset=folder", f"data.options={{path = '{tmp_path / 'nowhere'}'}}")
    torch.manual_seed(0)
    save_bundle(tmp_path / "run", config, UNet(config.model))
    code, _, err = run_cli("eval", str(tmp_path / "run"), "--n", "4", "--metrics", "fid", "--split", "train",
                             capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "nowhere" in err


def test_metric_names_are_parsed_in_order_without_duplicates():
    assert parse_metrics("kid, FID,kid") == ("kid", "fid")
    with pytest.raises(DiffkitError, match="choose from"):
        parse_metrics("")


def test_train_classifier_command_saves_a_loadable_classifier(tmp_path, capsys):
    code, _, err = run_cli("eval", "train-classifier", "--dataset", "synthetic", "--size", "8", "--out",
                             str(tmp_path / "c"), "--classifier-steps", "5", "--width", "4", capsys=capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "c" / "classifier.json").read_text())
    assert record["metadata"]["steps"] == 5 and 0 <= record["metadata"]["test_accuracy"] <= 1
    assert load_domain_model(tmp_path / "c").model.config.width == 4


def damaged_npz(path, how: str):
    """An .npz that is random bytes, the first half of a good file, or empty."""
    good = path.with_name("good.npz")
    np.savez(good, images=np.zeros((40, 1, 8, 8), dtype=np.uint8))
    data = good.read_bytes()
    content = {"random": np.random.default_rng(0).bytes(len(data)), "half": data[: len(data) // 2], "empty": b""}
    path.write_bytes(content[how])
    return path


@pytest.mark.parametrize("how", ["random", "half", "empty"])
@pytest.mark.parametrize("side", ["--real", "--fake"])
def test_a_damaged_npz_is_one_sentence_naming_the_file(tmp_path, capsys, how, side):
    bad = damaged_npz(tmp_path / "bad.npz", how)
    other = tmp_path / "good.npz"
    sides = {"--real": other, "--fake": other, side: bad}
    code, _, err = run_cli("eval", "--real", str(sides["--real"]), "--fake", str(sides["--fake"]), capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(bad) in err and ("empty" in err if how == "empty" else "damaged" in err), err


def test_two_sets_of_different_sizes_are_refused(tmp_path, capsys):
    np.savez(tmp_path / "small.npz", images=np.zeros((10, 1, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "large.npz", images=np.zeros((10, 1, 16, 16), dtype=np.uint8))
    code, _, err = run_cli("eval", "--real", str(tmp_path / "small.npz"), "--fake", str(tmp_path / "large.npz"),
                           capsys=capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "8x8" in err and "16x16" in err and "one size" in err


def test_kid_subsets_are_smaller_than_small_sets_so_its_spread_is_real():
    generator = torch.Generator().manual_seed(0)
    real, fake = torch.randn(256, 16, generator=generator), torch.randn(256, 16, generator=generator) + 0.2
    results = compare_features(("kid",), fake, lambda: real, seed=0)
    # Subsets of the whole set (the old min(1000, 256)) gave a spread of ~1e-16, pure rounding.
    assert results["kid_std"] > 1e-3 * abs(results["kid"]) and results["kid_std"] > 1e-8
    with pytest.raises(DiffkitError, match="subset size 300 exceeds"):
        compare_features(("kid",), fake, lambda: real, kid_subset_size=300)


def test_eval_output_must_be_a_json_file_and_refuses_nan_guidance(workspace, tmp_path, capsys):
    code, _, err = run_cli("eval", str(workspace / "run"), "--n", "4", "--out", str(tmp_path), capsys=capsys)
    assert code == 2 and "is a folder" in err and ".json" in err and ".partial" not in err
    code, _, err = run_cli("eval", str(workspace / "run"), "--n", "4", "--out", str(tmp_path / "x.txt"),
                           capsys=capsys)
    assert code == 2 and "'.txt'" in err and ".json" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(workspace / "run"), "--guidance", "inf"])
    assert exit_info.value.code == 2 and "not a finite number" in capsys.readouterr().err


def test_evaluation_sampling_shows_progress_on_a_terminal(workspace, terminal_stderr):
    terminal = terminal_stderr
    generate_samples(load(workspace / "run"), 6, sampler="ddim", steps=2, batch_size=3)
    assert "sampling" in terminal.getvalue() and "/2 [" in terminal.getvalue()


def test_a_sample_npz_is_what_eval_reads(workspace, tmp_path, capsys):
    from diffkit.evaluate.image_sets import load_image_set

    code, _, err = run_cli("sample", str(workspace / "run"), "--n", "6", "--steps", "2", "--quiet",
                           "--out", str(tmp_path / "samples.npz"), capsys=capsys)
    assert code == 0, err
    with np.load(tmp_path / "samples.npz") as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == np.uint8 and images.shape == (6, 1, 8, 8)
    assert labels.tolist() == [0, 1, 2, 3, 0, 1]  # the classes cycle, as in every command
    assert torch.equal(load_image_set(tmp_path / "samples.npz"), torch.from_numpy(images))
