"""Bad image files through `scan_images`, the tf.data pipeline, `load_image_source` and `read_rgb`.

Every file is built at test time by `tests/bad_files.py`.
"""

import os
import shutil
import warnings

import bad_files
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ssl_keras.data import image_files
from ssl_keras.data.image_files import decode_rgb
from ssl_keras.data.image_files import image_dataset
from ssl_keras.data.image_files import jpeg_decode_ratio
from ssl_keras.data.image_files import list_image_files
from ssl_keras.data.image_files import read_image
from ssl_keras.data.image_files import scan_images
from ssl_keras.data.source_spec import SourceError
from ssl_keras.data.unlabeled_images import load_image_source
from ssl_keras.data.unlabeled_images import repaired_report
from ssl_keras.localization.predict import UnreadableImageError
from ssl_keras.localization.predict import read_rgb

SKIP_REASONS = {
    "zero_byte": image_files.EMPTY,
    "truncated_jpeg": image_files.TRUNCATED,
}
REPAIR_REASONS = {
    "png_named_jpg": image_files.WRONG_EXTENSION,
    "cmyk_jpeg": image_files.CMYK,
    "grayscale": image_files.GRAYSCALE,
    "png16": image_files.SIXTEEN_BIT,
    "rgba_png": image_files.ALPHA,
    "non_ascii_name": None,
}


def pillow_rgb(path):
    """The reference conversion, written independently of TensorFlow with Pillow and NumPy.

    Matches `tf.io.decode_image(channels=3)`: 16-bit as `value >> 8`, alpha dropped (not
    composited), everything else through Pillow's `convert("RGB")`.
    """
    with Image.open(path) as image:
        if image.mode.startswith("I;16"):
            gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        if image.mode == "RGBA":
            return np.asarray(image)[..., :3]
        return np.asarray(image.convert("RGB"))


def squash(image, size):
    return tf.image.resize(image, (size, size), method="bilinear", antialias=True).numpy()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    folder = tmp_path_factory.mktemp("matrix")
    return folder, bad_files.write_image_matrix(folder)


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    """The 12000x9000 JPEG, written once (about 3 s)."""
    return bad_files.huge_jpeg(tmp_path_factory.mktemp("huge"))


def test_every_matrix_case_has_an_expected_outcome():
    assert set(SKIP_REASONS) | set(REPAIR_REASONS) == set(bad_files.IMAGE_MATRIX)
    for case, (_, outcome) in bad_files.IMAGE_MATRIX.items():
        assert (outcome == bad_files.SKIP) == (case in SKIP_REASONS), case


def test_scan_skips_and_repairs_each_matrix_case(matrix):
    folder, cases = matrix
    scan = scan_images(list_image_files(folder))
    skipped = dict(scan.skipped_files)
    repaired = dict(scan.repaired_files)
    for case, (path, outcome) in cases.items():
        if outcome == bad_files.SKIP:
            assert skipped.get(path) == SKIP_REASONS[case], case
            assert path not in scan.good_paths
        else:
            assert path in scan.good_paths and path not in skipped, case
            assert repaired.get(path) == REPAIR_REASONS[case], case
    assert scan.skipped == {image_files.EMPTY: 1, image_files.TRUNCATED: 1}
    assert scan.repaired == {reason: 1 for reason in REPAIR_REASONS.values() if reason}
    assert set(scan.repaired) <= set(image_files.REPAIRS)
    # Call sites written for the three-field result still unpack it.
    good_paths, skipped_counts, skipped_files = scan
    assert (good_paths, skipped_counts, skipped_files) == (
        scan.good_paths,
        scan.skipped,
        scan.skipped_files,
    )


def test_header_only_variants(tmp_path):
    built = {
        "rgb16": bad_files.png16_rgb(tmp_path),
        "palette": bad_files.palette_png(tmp_path),
        "rgb_bmp": bad_files.rgb_bmp(tmp_path),
        "palette_bmp": bad_files.palette_bmp(tmp_path),
        "one_bit_bmp": bad_files.one_bit_bmp(tmp_path),
        "bomb": bad_files.bomb_png(tmp_path),
    }
    scan = scan_images(list(built.values()))
    assert dict(scan.skipped_files) == {
        built["palette_bmp"]: image_files.UNSUPPORTED_BMP,
        built["one_bit_bmp"]: image_files.UNSUPPORTED_BMP,
        built["bomb"]: image_files.TOO_LARGE,
    }
    assert dict(scan.repaired_files) == {
        built["rgb16"]: image_files.SIXTEEN_BIT,  # Pillow calls it "RGB": the IHDR tells
        built["palette"]: image_files.PALETTE,
    }
    assert scan.good_paths == [built["rgb16"], built["palette"], built["rgb_bmp"]]


def test_unsupported_bmp_variants_would_be_lost_in_tensorflow(tmp_path):
    # Why the scan skips them: TensorFlow fails on 1-bit BMPs and reads an 8-bit colour
    # palette as gray levels, so training would drop the file silently or see wrong pixels.
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_rgb(tf.io.read_file(bad_files.one_bit_bmp(tmp_path)))
    palette = bad_files.palette_bmp(tmp_path)
    decoded = decode_rgb(tf.io.read_file(palette)).numpy().astype(int)
    assert np.abs(decoded - pillow_rgb(palette)).mean() > 20


def test_pipeline_yields_every_readable_image_with_its_pixels(matrix):
    folder, cases = matrix
    scan = scan_images(list_image_files(folder), image_size=32)
    dataset = image_dataset(
        scan.good_paths, image_size=32, batch_size=4, shuffle=False, drop_remainder=False
    )
    images = np.concatenate([batch.numpy() for batch in dataset])
    readable = [path for path, outcome in cases.values() if outcome == bad_files.READ]
    assert sorted(scan.good_paths) == sorted(readable) and len(images) == len(readable)
    for path, image in zip(scan.good_paths, images):
        expected = squash(pillow_rgb(path), 32)
        # Only JPEG decoder differences (IDCT, upsampling) remain after the same resize.
        assert np.abs(image - expected).mean() < 2.0, os.path.basename(path)
        assert np.abs(image - expected).max() < 8.0, os.path.basename(path)
    assert any("é" in path for path in scan.good_paths)


def test_read_rgb_agrees_with_the_training_decode(matrix):
    _, cases = matrix
    for case, (path, outcome) in cases.items():
        if outcome == bad_files.SKIP:
            with pytest.raises(UnreadableImageError, match=SKIP_REASONS[case]) as error:
                read_rgb(path)
            assert path in str(error.value) and error.value.reason == SKIP_REASONS[case]
            continue
        rgb = read_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3, case
        np.testing.assert_allclose(
            squash(rgb, 24),
            read_image(tf.constant(path), image_size=24).numpy(),
            atol=1e-3,
            err_msg=case,
        )
        assert np.abs(rgb.astype(int) - pillow_rgb(path)).mean() < 2.0, case


def test_read_rgb_missing_and_corrupt(tmp_path):
    with pytest.raises(UnreadableImageError, match="missing file"):
        read_rgb(tmp_path / "gone.jpg")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(UnreadableImageError, match="notes.jpg: not an image"):
        read_rgb(text)


def test_jpeg_decode_ratio_keeps_twice_the_target_size():
    assert jpeg_decode_ratio(3000, 4000, 96) == 1  # 12 MP: decoded whole
    assert jpeg_decode_ratio(9000, 12000, 96) == 8  # 1125 >= 2 * 96
    assert jpeg_decode_ratio(9000, 12000, 1000) == 4  # 2250 >= 2000, 1125 < 2000
    assert jpeg_decode_ratio(9000, 12000, 2000) == 2
    assert jpeg_decode_ratio(9000, 12000, 3000) == 1
    side = int(image_files.LARGE_IMAGE_PIXELS**0.5) + 1
    assert jpeg_decode_ratio(side, side, 32) == 8 and jpeg_decode_ratio(side - 2, side - 2, 32) == 1


def test_huge_image_is_read_at_reduced_size_and_reported(huge):
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # accepted images stay quiet
        scan = scan_images([huge], image_size=96)
        full = scan_images([huge])
    assert scan.good_paths == [huge] and scan.repaired_files == [(huge, image_files.REDUCED)]
    assert full.good_paths == [huge] and full.repaired == {}  # no image_size: decoded whole
    data = tf.io.read_file(huge)
    assert tuple(decode_rgb(data, image_size=96).shape) == (
        1125,
        1500,
        3,
    )  # 1/8, shorter side >= 192
    assert tuple(decode_rgb(data, image_size=1000).shape) == (2250, 3000, 3)

    (batch,) = list(image_dataset([huge], image_size=96, batch_size=1, shuffle=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(huge) as image:
            image.draft(
                "RGB", (1500, 1125)
            )  # Pillow's own 1/8 DCT scaling: an independent reference
            expected = squash(np.asarray(image.convert("RGB")), 96)
    assert np.abs(batch.numpy()[0] - expected).mean() < 2.0


def test_image_source_counts_skips_and_repairs(matrix, shared_data, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(matrix[0], folder)
    for path in sorted((shared_data / "unlabeled").glob("*.jpg"))[:2]:
        shutil.copy(path, folder / path.name)
    source = load_image_source(str(folder), image_size=24, batch_size=4, seed=0)
    assert source.num_images == 2 + len(REPAIR_REASONS)
    assert source.skipped == {image_files.EMPTY: 1, image_files.TRUNCATED: 1}
    assert source.repaired == {reason: 1 for reason in REPAIR_REASONS.values() if reason}
    assert {os.path.basename(path) for path, _ in source.repaired_files} == {
        "actually_png.jpg",
        "cmyk.jpg",
        "gray.jpg",
        "sixteen_bit.png",
        "rgba.png",
    }
    assert "2 skipped" in source.description and "5 converted" in source.description
    report = repaired_report(source.repaired_files).splitlines()
    assert report[0] == "read 5 files after a conversion:" and len(report) == 6
    assert sum(int(batch.shape[0]) for batch in source.dataset) == 8  # 2 full batches of 4


def test_empty_folder_names_the_folder_and_the_fix(tmp_path):
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(SourceError) as error:
        load_image_source(str(tmp_path), image_size=24, batch_size=2)
    message = str(error.value)
    assert (
        str(tmp_path) in message
        and "no image files" in message
        and "found only 1 other file" in message
    )
    assert "point --data at a folder of photos" in message and "\n" not in message


def test_folder_of_only_bad_files_names_them(tmp_path):
    bad_files.zero_byte(tmp_path)
    bad_files.truncated_jpeg(tmp_path)
    with pytest.raises(SourceError) as error:
        load_image_source(str(tmp_path), image_size=24, batch_size=2)
    message = str(error.value)
    assert "none of the 2 image files can be decoded" in message
    assert "1 truncated" in message and "1 empty file" in message
    assert "truncated.jpg: truncated" in message and "zero.jpg: empty file" in message
    assert "\n" not in message
