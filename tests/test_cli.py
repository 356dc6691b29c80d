"""The command line's contract: help works, user mistakes exit 2 with one sentence, before any work starts;
outputs (grids, .npz, folders, GIF/MP4), --spacing and progress bars behave the same in every command."""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.cli import build_parser, main
from diffkit.errors import DiffkitError
from diffkit.files import atomic_path
from diffkit.images import save_grid
from diffkit.schedule import SPACINGS

from conftest import SOURCE


def test_module_help_lists_usage(diffkit_cli):
    result = diffkit_cli("--help")
    assert result.returncode == 0
    assert "usage: diffkit" in result.stdout


def parse_error(arguments, capsys) -> str:
    """The one line argparse prints when it refuses `arguments` (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("diffkit ") and "error:" in error
    return error


PICTURES = ["--image", "a.png"]
COMMANDS_WITH_OUT = [
    ["sample", "RUN"], ["inpaint", "RUN", *PICTURES, "--mask", "m.png"], ["img2img", "RUN", *PICTURES, "--strength", "1"],
    ["interpolate", "RUN", "--image-a", "a.png", "--image-b", "b.png"], ["viz", "schedules"],
    ["viz", "trajectory", "RUN"], ["viz", "gaussian1d"],
]


@pytest.mark.parametrize("command", COMMANDS_WITH_OUT, ids=lambda command: " ".join(command[:2]))
@pytest.mark.parametrize("name", ["grid.xyz", "grid"])
def test_every_out_refuses_an_unknown_extension_naming_the_valid_ones(command, name, capsys, tmp_path):
    error = parse_error([*command, "--out", str(tmp_path / name)], capsys)
    assert ".png" in error and ("'.xyz'" in error if name.endswith("xyz") else "no extension" in error), error


@pytest.mark.parametrize("command", [["sample", "RUN"], ["viz", "trajectory", "RUN", "--out", "x.png"]])
def test_animations_must_be_gif_or_mp4(command, capsys, tmp_path):
    error = parse_error([*command, "--gif", str(tmp_path / "x.xyz")], capsys)
    assert ".gif" in error and ".mp4" in error and "'.xyz'" in error


@pytest.mark.parametrize("command", COMMANDS_WITH_OUT[1:], ids=lambda command: " ".join(command[:2]))
def test_an_out_that_is_a_folder_is_named_not_a_temporary_file(command, capsys, tmp_path):
    folder = tmp_path / "pictures.png"
    folder.mkdir()
    error = parse_error([*command, "--out", str(folder)], capsys)
    assert f"{folder} is a folder" in error and "partial" not in error


def test_writers_refuse_folders_and_unknown_suffixes_themselves(tmp_path):
    with pytest.raises(DiffkitError, match="is a folder"):
        with atomic_path(tmp_path):
            pass
    with pytest.raises(DiffkitError, match=r"'\.xyz'.*\.png, \.jpg"):
        save_grid(torch.zeros(1, 1, 4, 4), tmp_path / "grid.xyz")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("arguments", [
    ["sample", "RUN", "--guidance", "nan"], ["sample", "RUN", "--guidance", "inf"],
    ["sample", "RUN", "--guidance-sweep", "0,nan,2"], ["inpaint", "RUN", *PICTURES, "--mask", "m", "--guidance", "nan"],
    ["img2img", "RUN", *PICTURES, "--strength", "nan"], ["interpolate", "RUN", "--image-a", "a", "--image-b", "b",
                                                         "--guidance", "inf"],
    ["eval", "RUN", "--guidance", "nan"], ["viz", "gaussian1d", "--out", "x.png", "--std", "inf"],
], ids=lambda arguments: " ".join(arguments[:1] + arguments[-2:]))
def test_non_finite_numbers_are_refused_before_any_work(arguments, capsys):
    assert "not a finite number" in parse_error(arguments, capsys)


def test_the_library_refuses_a_nan_guidance_scale_too(bundle_dir):
    from diffkit import load

    with pytest.raises(DiffkitError, match="finite number of at least 0, not nan"):
        load(bundle_dir).sample(2, steps=2, guidance=float("nan"))


@pytest.mark.parametrize("command", [["sample", "R"], ["inpaint", "R", *PICTURES, "--mask", "m"],
                                     ["img2img", "R", *PICTURES, "--strength", "1"],
                                     ["interpolate", "R", "--image-a", "a", "--image-b", "b"],
                                     ["viz", "trajectory", "R", "--out", "x.png"], ["eval", "R"]],
                         ids=lambda command: " ".join(command[:2]))
def test_every_sampling_command_takes_every_spacing_of_the_library(command, capsys):
    parser = build_parser()
    for spacing in SPACINGS:
        assert parser.parse_args([*command, "--spacing", spacing]).spacing == spacing
    error = parse_error([*command, "--spacing", "sideways"], capsys)
    assert all(spacing in error for spacing in SPACINGS)


def test_sample_spacing_reaches_the_sampler(bundle_dir, tmp_path, capsys):
    grids = {}
    for spacing in ("trailing", "leading"):
        out = tmp_path / f"{spacing}.png"
        assert main(["sample", str(bundle_dir), "--n", "2", "--steps", "3", "--sampler", "ddim", "--spacing", spacing,
                     "--out", str(out)]) == 0
        grids[spacing] = np.asarray(Image.open(out))
    assert not np.array_equal(grids["trailing"], grids["leading"])


def test_sample_writes_a_folder_of_pngs_and_refuses_a_folder_in_use(bundle_dir, tmp_path, capsys):
    folder = tmp_path / "samples"
    assert main(["sample", str(bundle_dir), "--n", "5", "--steps", "2", "--out", f"{folder}/"]) == 0
    names = sorted(path.name for path in folder.iterdir())
    assert names == [f"0000{index}-class{index % 4}.png" for index in range(5)]
    assert np.asarray(Image.open(folder / names[0])).shape == (8, 8)
    assert main(["sample", str(bundle_dir), "--n", "5", "--steps", "2", "--out", f"{folder}/"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_sample_gif_mp4_is_a_real_mp4(bundle_dir, tmp_path, capsys):
    movie = tmp_path / "steps.mp4"
    assert main(["sample", str(bundle_dir), "--n", "4", "--steps", "3", "--out", str(tmp_path / "g.png"),
                 "--gif", str(movie)]) == 0, capsys.readouterr().err
    assert movie.read_bytes()[4:8] == b"ftyp"  # the ISO media container
    reader = imageio.get_reader(str(movie))
    frames = [frame for frame in reader]
    assert reader.get_meta_data()["codec"] == "h264" and len(frames) >= 4  # 3 steps + the finished grid (+ hold)
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB")).astype(float)
    last = frames[-1][: grid.shape[0], : grid.shape[1]].astype(float)
    assert np.abs(last - grid).mean() < 12  # the held last frame is the grid (lossy H.264)


def run_on_a_terminal(*arguments: str) -> str:
    """Run `python -m diffkit ARGS` with stderr on a pseudo-terminal; returns what it wrote there."""
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide, which tqdm draws as nothing: give it a real size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    environment = dict(os.environ, PYTHONPATH=str(SOURCE), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "diffkit", *arguments], stdout=subprocess.DEVNULL,
                               stderr=follower, env=environment)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_sample_shows_a_progress_bar_on_a_terminal_only(bundle_dir, tmp_path, terminal_stderr):
    arguments = ["sample", str(bundle_dir), "--n", "2", "--steps", "3", "--out", str(tmp_path / "a.png")]
    shown = run_on_a_terminal(*arguments)
    assert "sampling" in shown and "/4 [" in shown, shown  # 3 steps and the finished sample
    assert main([*arguments, "--quiet"]) == 0 and terminal_stderr.getvalue() == ""
    assert main(arguments) == 0 and "sampling" in terminal_stderr.getvalue()
    # Not a terminal (a pipe, a log): test_cli_sample_writes_the_grid_and_gif sees an empty stderr.


def read_picture(path):
    return np.asarray(Image.open(path))


def test_cli_sample_writes_the_grid_and_gif(bundle_dir, tmp_path, diffkit_cli):
    out, gif = tmp_path / "grid.png", tmp_path / "steps.gif"
    result = diffkit_cli("sample", str(bundle_dir), "--sampler", "ddim", "--steps", "3", "--n", "6", "--seed", "0",
                         "--nrow", "3", "--label", "2", "--out", str(out), "--gif", str(gif))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # stderr is a pipe here, not a terminal: no progress bar characters
    with Image.open(out) as grid:
        assert grid.size == (3 * 10 + 2, 2 * 10 + 2)  # 3 x 2 tiles of 8 px with 2 px padding
    with Image.open(gif) as animation, Image.open(out) as grid:
        assert animation.n_frames >= 2  # Pillow merges identical consecutive frames
        animation.seek(animation.n_frames - 1)
        assert np.array_equal(np.asarray(animation.convert("L")), np.asarray(grid.convert("L")))


def test_cli_sample_refuses_a_bundle_with_a_wrong_config(bundle_dir, tmp_path, diffkit_cli):
    path = bundle_dir / "config.json"
    data = json.loads(path.read_text())
    data["model"]["channel_mults"] = [1, 3]
    path.write_text(json.dumps(data))
    result = diffkit_cli("sample", str(bundle_dir), "--out", str(tmp_path / "grid.png"))
    assert result.returncode == 2
    assert "does not fit the model" in result.stderr and "shapes differ" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "grid.png").exists()


@pytest.mark.slow
def test_sample_command_guides_and_sweeps(diffkit_cli, bundle_dir, tmp_path):
    out = tmp_path / "guided.png"
    result = diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--label", "2", "--guidance", "3",
                         "--out", str(out))
    assert result.returncode == 0, result.stderr
    unguided = tmp_path / "plain.png"
    assert diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--label", "2",
                       "--out", str(unguided)).returncode == 0
    assert not np.array_equal(read_picture(out), read_picture(unguided))  # guidance changes the samples
    sweep = tmp_path / "sweep.png"
    result = diffkit_cli("sample", str(bundle_dir), "--n", "4", "--steps", "4", "--guidance-sweep", "0,1,2",
                         "--out", str(sweep))
    assert result.returncode == 0, result.stderr
    assert read_picture(sweep).shape == (3 * 10 + 2, 4 * 10 + 2)
    bad = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--label", "9", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 2 and "9" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_sample_command_refuses_zero_steps_and_an_unavailable_device_and_accepts_null_label(diffkit_cli, bundle_dir,
                                                                                            tmp_path):
    zero = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "0", "--out", str(tmp_path / "a.png"))
    assert zero.returncode == 2 and "at least 1" in zero.stderr
    device = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--device", "cuda", "--out", str(tmp_path / "b.png"))
    assert device.returncode == 2 and "cuda" in device.stderr and "Traceback" not in device.stderr
    null = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "3", "--label", "-1",
                       "--out", str(tmp_path / "c.png"))
    assert null.returncode == 0, null.stderr
    unwritable = diffkit_cli("sample", str(bundle_dir), "--n", "2", "--steps", "3", "--out", "/proc/none/x.png")
    assert unwritable.returncode == 2 and "Traceback" not in unwritable.stderr
