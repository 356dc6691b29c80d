"""Atomic writes: a failed write leaves the previous file intact and no temporary behind."""

import pytest

from diffkit.files import atomic_path


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "sub" / "state.ckpt"
    with atomic_path(target) as temporary:
        temporary.write_text("good")
    assert target.read_text() == "good"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "good"
    assert sorted(path.name for path in target.parent.iterdir()) == ["state.ckpt"]


def test_the_temporary_keeps_the_suffix_for_format_sniffing_writers(tmp_path):
    with atomic_path(tmp_path / "grid.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path
        temporary.write_bytes(b"x")


def test_written_files_get_the_umask_mode_even_from_writers_that_create_0600(tmp_path):
    import os

    from diffkit.files import FILE_MODE

    mask = os.umask(0o022)
    os.umask(mask)
    with atomic_path(tmp_path / "model.safetensors") as temporary:
        temporary.write_bytes(b"x")
        os.chmod(temporary, 0o600)  # as safetensors' writer does
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == FILE_MODE == 0o666 & ~mask
