"""`write_file_atomic` and `save_png_atomic`: a file appears only complete, and no temporary file stays."""

import errno
import json
import os
import stat

import numpy as np
import pytest
from stand_ins import half_written_save
from PIL import Image

from ssl_keras.runs.run_directory import (
    RunDirectoryError,
    RunFileError,
    RunWriteError,
    read_json,
    save_model_atomic,
    save_png_atomic,
    write_file_atomic,
    write_json_atomic,
    write_text_atomic,
)


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
    monkeypatch.setattr(Image.Image, "save", half_written_save(b"\x89PNG half", Boom("disk full")))
    with pytest.raises(Boom):
        save_png_atomic(np.full((4, 4, 3), 255, "uint8"), path)
    monkeypatch.undo()
    with Image.open(path) as image:
        np.testing.assert_array_equal(np.asarray(image), np.zeros((4, 4, 3), "uint8"))
    assert os.listdir(tmp_path) == ["drawn.png"]


# Modes, one-line write and read errors (issue 14).


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_every_writer_gives_the_mode_the_umask_asks_for(tmp_path, umask, mode):
    import keras

    old = os.umask(umask)
    try:
        write_json_atomic(str(tmp_path / "metrics.json"), {"a": 1})
        write_text_atomic(str(tmp_path / "per_class.md"), "| a |\n")
        save_png_atomic(np.zeros((2, 2, 3), "uint8"), str(tmp_path / "drawn.png"))
        save_model_atomic(
            keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
            str(tmp_path / "model.keras"),
        )
        write_json_atomic(str(tmp_path / "metrics.json"), {"a": 2})  # replacing keeps the mode too
    finally:
        os.umask(old)
    modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in os.listdir(tmp_path)}
    assert modes == dict.fromkeys(
        ["metrics.json", "per_class.md", "drawn.png", "model.keras"], mode
    )


def test_a_full_disk_is_one_line_naming_the_file_and_the_old_file_stays(tmp_path):
    path = str(tmp_path / "metrics.json")
    write_json_atomic(path, {"a": 1})

    def enospc(tmp):
        open(tmp, "w").write('{"a": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(RunWriteError) as failed:
        write_file_atomic(path, enospc)
    assert str(failed.value) == (
        f"cannot write {path}: No space left on device (the disk is full: free some space)"
    )
    assert isinstance(failed.value, OSError) and isinstance(failed.value, RunDirectoryError)
    assert failed.value.errno == errno.ENOSPC and failed.value.path == path
    assert os.listdir(tmp_path) == ["metrics.json"] and json.loads(open(path).read()) == {"a": 1}


def test_truncated_or_binary_json_is_one_line_naming_the_file(tmp_path):
    for name, content in [
        ("state.json", b'{"epoch": 2, "chec'),
        ("config.json", b""),
        ("best.json", b"\xff\xfe\x00binary"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(RunFileError) as failed:
            read_json(str(path))
        message = str(failed.value)
        assert message.startswith(f"{path}: not valid JSON") and "\n" not in message
        assert isinstance(failed.value, RunDirectoryError)
    assert "(it is empty)" in _message(read_json, str(tmp_path / "config.json"))
    with pytest.raises(FileNotFoundError):  # a missing file stays what it was
        read_json(str(tmp_path / "missing.json"))


def _message(function, *args):
    try:
        function(*args)
    except Exception as error:
        return str(error)
    raise AssertionError("no error")
