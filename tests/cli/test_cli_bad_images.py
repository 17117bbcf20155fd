"""End to end: `ssl-keras pretrain` and `predict` on folders of bad image files.

Files are built at test time by `tests/bad_files.py`; the runs are tiny (`--backbone tiny`,
32 px, one epoch). Exceptions are caught (`invoke_as_user`) as a user would meet them, so a
traceback would show in the output.
"""

import csv
import json
import os
import shutil

import bad_files
import pytest
from cli_runs import command_args, invoke_as_user, one_error_line, options
from PIL import Image

from ssl_keras.backbone import tiny_backbone
from ssl_keras.data import image_files

TINY_PRETRAIN = options(
    backbone="tiny",
    batch_size=4,
    image_size=32,
    epochs=1,
    warmup_epochs=0,
    export=False,
    quiet=True,
)
SKIPPED = {"zero.jpg": image_files.EMPTY, "truncated.jpg": image_files.TRUNCATED}
REPAIRED = {
    "actually_png.jpg": image_files.WRONG_EXTENSION,
    "cmyk.jpg": image_files.CMYK,
    "gray.jpg": image_files.GRAYSCALE,
    "sixteen_bit.png": image_files.SIXTEEN_BIT,
    "rgba.png": image_files.ALPHA,
}
READ_AS_IS = ["café_日本語_фото.jpg"]


def assert_one_line_error(result, *names):
    """The whole output is one `Error: ...` line, naming each of `names`."""
    # An uncaught exception also exits with 1; a user error leaves only click's SystemExit.
    line = one_error_line(result)
    assert result.output.strip().splitlines() == [line], result.output
    assert line.startswith("Error: "), line
    for name in names:
        assert name in line, name


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    bad_files.write_image_matrix(folder)
    return folder


@pytest.fixture(scope="module")
def photos(matrix, shared_data, tmp_path_factory):
    """Eight real RGB photos (no conversion to report) plus the whole bad-image matrix."""
    folder = tmp_path_factory.mktemp("photos")
    with open(shared_data / "unlabeled" / "manifest.csv", newline="", encoding="utf-8") as f:
        names = [row["file"] for row in csv.DictReader(f) if row["mode"] == "RGB"][:8]
    for name in names:
        shutil.copy(shared_data / "unlabeled" / name, folder / name)
    for name in os.listdir(matrix):
        shutil.copy(matrix / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    """A one-epoch detect run on synthetic data, from a tiny encoder."""
    encoder = tmp_path_factory.mktemp("encoder")
    tiny_backbone(width=8).save(encoder / "encoder.keras")
    out = tmp_path_factory.mktemp("detect") / "run"
    detect = options(backbone=encoder, epochs=1, image_size=32, batch_size=16, export=False)
    result = invoke_as_user(command_args("detect", "synthetic:64", out, *detect, quiet=True))
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.large
def test_pretrain_on_the_matrix_skips_and_reports_each_file(photos, tmp_path):
    out = tmp_path / "run"
    result = invoke_as_user(command_args("pretrain", photos, out, *TINY_PRETRAIN))
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["num_images"] == 8 + len(REPAIRED) + len(READ_AS_IS)
    assert record["skipped"] == {reason: 1 for reason in SKIPPED.values()}
    # The run's log names each file once (`unlabeled_images.skipped_report` / `repaired_report`).
    for name, reason in SKIPPED.items():
        assert f"{name}: {reason}" in result.output, (
            f"skipped file {name} is not named in the output"
        )
    for name, reason in REPAIRED.items():
        assert f"{name}: {reason}" in result.output, (
            f"converted file {name} is not named in the output"
        )
    assert record["repaired"] == {reason: 1 for reason in REPAIRED.values()}


def test_pretrain_on_an_empty_folder_stops_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke_as_user(command_args("pretrain", empty, tmp_path / "run", *TINY_PRETRAIN))
    assert_one_line_error(
        result, str(empty), "no image files", "point --data at a folder of photos"
    )
    assert not (tmp_path / "run" / "result.json").exists()


def test_pretrain_on_only_bad_files_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    bad_files.zero_byte(bad)
    bad_files.truncated_jpeg(bad)
    result = invoke_as_user(command_args("pretrain", bad, tmp_path / "run", *TINY_PRETRAIN))
    assert_one_line_error(
        result,
        str(bad),
        "none of the 2 image files can be decoded",
        "zero.jpg: empty file",
        "truncated.jpg: truncated",
    )
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.large
def test_predict_on_the_matrix_draws_the_readable_and_lists_the_rest(detect_run, matrix, tmp_path):
    out = tmp_path / "pred"
    empty = tmp_path / "no_images"
    empty.mkdir()
    result = invoke_as_user(
        ["predict", "--model", detect_run, matrix, empty, tmp_path / "gone.jpg", "--out", out]
    )
    assert result.exit_code == 0, result.output
    for name, reason in SKIPPED.items():
        assert f"image {matrix / name}: skipped, {reason}" in result.output
    assert f"image {empty}: skipped, folder holds no image files" in result.output
    assert f"image {tmp_path / 'gone.jpg'}: skipped, missing file" in result.output
    for name, reason in REPAIRED.items():
        assert f"image {matrix / name}: read, {reason}" in result.output
    readable = [*REPAIRED, *READ_AS_IS]
    assert sorted(os.listdir(out)) == sorted(
        [os.path.splitext(n)[0] + "_pred.png" for n in readable] + ["predictions.json"]
    )
    for name in readable:  # drawn on the original frame
        with (
            Image.open(matrix / name) as original,
            Image.open(out / (os.path.splitext(name)[0] + "_pred.png")) as drawn,
        ):
            assert drawn.size == original.size and drawn.mode == "RGB"
    record = json.loads((out / "predictions.json").read_text())
    assert record["num_images"] == len(readable) == len(record["predictions"])
    assert {os.path.basename(row["image"]) for row in record["predictions"]} == set(readable)
    assert record["skipped"] == {
        image_files.EMPTY: 1,
        image_files.TRUNCATED: 1,
        image_files.MISSING: 1,
        "folder holds no image files": 1,
    }
    assert {(os.path.basename(f["image"]), f["reason"]) for f in record["skipped_files"]} >= set(
        SKIPPED.items()
    )
    assert record["repaired"] == {reason: 1 for reason in REPAIRED.values()}
    assert f"{len(readable)} image(s) drawn, 4 skipped" in result.output

    again = invoke_as_user(["predict", "--model", detect_run, matrix, "--out", out])
    assert_one_line_error(again, "predictions.json exists")


def test_predict_with_no_usable_input_stops_before_loading_the_model(matrix, tmp_path):
    # The model folder does not even exist: the inputs are checked first.
    result = invoke_as_user(
        [
            "predict",
            "--model",
            tmp_path / "no_run",
            matrix / "zero.jpg",
            matrix / "truncated.jpg",
            "--out",
            tmp_path / "pred",
        ]
    )
    assert_one_line_error(
        result, "no usable input image", "zero.jpg: empty file", "truncated.jpg: truncated"
    )
    assert not (tmp_path / "pred").exists()


@pytest.mark.large
def test_predict_reads_a_huge_jpeg_at_reduced_size(detect_run, tmp_path):
    huge = bad_files.huge_jpeg(tmp_path)
    out = tmp_path / "pred"
    result = invoke_as_user(["predict", "--model", detect_run, huge, "--out", out])
    assert result.exit_code == 0, result.output
    assert f"image {huge}: read, {image_files.REDUCED}" in result.output
    with Image.open(out / "huge_pred.png") as drawn:
        assert drawn.size == (
            1500,
            1125,
        )  # 1/8 of 12000x9000: drawn without holding 324 MB of pixels
    record = json.loads((out / "predictions.json").read_text())
    assert record["repaired"] == {image_files.REDUCED: 1} and record["num_images"] == 1
    x0, y0, x1, y1 = record["predictions"][0]["box"]
    assert 0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0
