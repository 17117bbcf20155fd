"""Files whose headers pass but whose pixel data TensorFlow cannot decode are skipped by the
scan, so the scan and the decoder agree (before, `detect` trained, then died in evaluation
with `jpeg::Uncompress failed`, naming no file and writing no metrics.json)."""

import json

import bad_files
import pytest
from click.testing import CliRunner
from voc_devkit import copy_devkit

from ssl_keras.cli.main import main
from ssl_keras.data import image_files
from ssl_keras.data.voc import load_voc_records, voc_feature_dataset

UNDECODABLE = [bad_files.undefined_quantization_jpeg, bad_files.bad_zlib_png]


@pytest.mark.parametrize("make", UNDECODABLE)
def test_the_scan_skips_pixel_data_tensorflow_cannot_decode(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(ValueError, match="corrupt image data"):
        image_files.load_rgb(path)  # The decoder refuses it...
    good = bad_files.good_jpeg(tmp_path)
    scan = image_files.scan_images([path, good])  # ...so the scan does too.
    assert scan.good_paths == [good]
    assert scan.skipped_files == [(path, image_files.CORRUPT_DATA)]
    assert image_files.scan_images([path], decode=False).good_paths == [path]  # Header only.


@pytest.mark.large
def test_a_voc_test_image_that_cannot_be_decoded_is_skipped_and_named(tmp_path, shared_data):
    root = tmp_path / "VOC2007"
    ids = copy_devkit(shared_data / "voc2007", root, {"train": 8, "val": 4, "test": 4})
    broken = ids["test"][1]
    made = bad_files.undefined_quantization_jpeg(root / "JPEGImages", name=f"{broken}.jpg")
    loaded = load_voc_records(root, "test")
    assert [r["image_id"] for r in loaded.records] == [i for i in ids["test"] if i != broken]
    assert loaded.skipped == {image_files.CORRUPT_DATA: 1}
    assert loaded.messages == [f"image {broken}.jpg: {image_files.CORRUPT_DATA}; skipped"]
    assert len(list(voc_feature_dataset(loaded.records))) == 3
    assert made.endswith(f"{broken}.jpg")

    out = tmp_path / "run"
    args = ["detect", "--data", f"voc:{root}", "--backbone", "scratch", "--backbone-name"]
    args += ["tiny", "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--no-export"]
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.count(f"{broken}.jpg") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_by_split"]["test"] == {image_files.CORRUPT_DATA: 1}
    assert metrics["num_test_images"] == 3
