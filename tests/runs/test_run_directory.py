"""`write_file_atomic` and `save_png_atomic`: a file appears only complete, and no temporary file stays."""

import os

import numpy as np
import pytest
from PIL import Image

from ssl_keras.runs.run_directory import save_png_atomic, write_file_atomic


class Boom(RuntimeError):
    pass


def test_the_file_appears_only_once_written_and_no_temporary_stays(tmp_path):
    path = str(tmp_path / "plot.png")
    seen = {}

    def write(tmp):
        seen["tmp"] = tmp
        with open(tmp, "wb") as f:
            f.write(b"first half ")
            seen["path_exists_while_writing"] = os.path.exists(path)
            f.write(b"second half")

    assert write_file_atomic(path, write) == path
    assert seen["path_exists_while_writing"] is False
    assert open(path, "rb").read() == b"first half second half"
    assert os.listdir(tmp_path) == ["plot.png"]
    # Beside the target (so the rename is atomic), named per process, with the target's extension
    # (PIL, matplotlib and `model.save` pick the format from it).
    assert os.path.dirname(seen["tmp"]) == str(tmp_path)
    assert str(os.getpid()) in os.path.basename(seen["tmp"])
    assert seen["tmp"].endswith(".png")


def test_an_exception_in_the_writer_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = str(tmp_path / "plot.png")
    write_file_atomic(path, lambda tmp: open(tmp, "wb").write(b"old"))

    def half_then_crash(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a fi")
        raise Boom("disk full")

    with pytest.raises(Boom):
        write_file_atomic(path, half_then_crash)
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["plot.png"]


def test_a_writer_that_fails_before_writing_leaves_nothing(tmp_path):
    def crash(tmp):
        raise Boom("no figure")

    with pytest.raises(Boom):
        write_file_atomic(str(tmp_path / "new.png"), crash)
    assert os.listdir(tmp_path) == []


def test_two_processes_never_share_a_temporary_name(tmp_path, monkeypatch):
    path = str(tmp_path / "plot.png")
    names = []
    for pid in (1234, 5678):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        write_file_atomic(path, lambda tmp: (names.append(tmp), open(tmp, "wb").close()))
    assert names[0] != names[1]


def test_save_png_atomic_writes_the_array_as_a_png(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype="uint8")
    path = str(tmp_path / "drawn.png")
    assert save_png_atomic(array, path) == path
    with Image.open(path) as image:
        assert image.format == "PNG"
        np.testing.assert_array_equal(np.asarray(image), array)
    assert os.listdir(tmp_path) == ["drawn.png"]


def test_save_png_atomic_keeps_an_older_png_when_saving_fails(tmp_path, monkeypatch):
    path = str(tmp_path / "drawn.png")
    save_png_atomic(np.zeros((4, 4, 3), "uint8"), path)

    def half_then_crash(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise Boom("disk full")

    monkeypatch.setattr(Image.Image, "save", half_then_crash)
    with pytest.raises(Boom):
        save_png_atomic(np.full((4, 4, 3), 255, "uint8"), path)
    monkeypatch.undo()
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), np.zeros((4, 4, 3), "uint8"))
    assert os.listdir(tmp_path) == ["drawn.png"]
