"""The image scan's progress bar: on inside `scan_progress()` for large scans, off elsewhere."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_keras.cli.main import main
from ssl_keras.data import image_files
from ssl_keras.data.image_files import scan_images, scan_progress
from test_case import TINY_ARGS


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(70):  # over 64, so the scan runs on threads
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def _paths(folder):
    return image_files.list_image_files(str(folder))


def test_large_scan_in_block_shows_count_and_final_bar(photos, capsys, monkeypatch):
    monkeypatch.setattr(image_files, "PROGRESS_MIN_FILES", 10)
    with scan_progress():
        scan = scan_images(_paths(photos))
    out = capsys.readouterr().out
    assert "checking 71 image files" in out
    assert "71/71" in out  # the bar reached the end
    assert len(scan.good_paths) == 70 and scan.skipped_files[0][0].endswith("broken.png")


def test_no_bar_outside_the_block_when_off_or_for_small_scans(photos, capsys, monkeypatch):
    scan_images(_paths(photos))  # outside the block: library calls print nothing
    with scan_progress(enabled=False):
        scan_images(_paths(photos))
    with scan_progress():  # 71 files is under the default 500
        scan_images(_paths(photos))
    assert capsys.readouterr().out == ""


def test_block_is_reset_after_an_error(photos, capsys, monkeypatch):
    monkeypatch.setattr(image_files, "PROGRESS_MIN_FILES", 10)
    with pytest.raises(RuntimeError), scan_progress():
        raise RuntimeError("boom")
    scan_images(_paths(photos))
    assert capsys.readouterr().out == ""


def test_scan_result_is_the_same_with_the_bar(photos, monkeypatch):
    plain = scan_images(_paths(photos))
    monkeypatch.setattr(image_files, "PROGRESS_MIN_FILES", 10)
    with scan_progress():
        shown = scan_images(_paths(photos))
    assert shown == plain


@pytest.mark.parametrize("quiet", [False, True])
def test_pretrain_shows_the_scan_unless_quiet(photos, tmp_path, monkeypatch, quiet):
    monkeypatch.setattr(image_files, "PROGRESS_MIN_FILES", 10)
    args = ["pretrain", "--data", str(photos), "--out", str(tmp_path / "run"), "--epochs", "1"]
    args += [*TINY_ARGS, "--no-export"]
    args += ["--steps-per-epoch", "1"] + (["--quiet"] if quiet else [])
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ("checking 71 image files" in result.output) is not quiet
