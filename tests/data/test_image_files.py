import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from ssl_keras.data import image_files
from ssl_keras.data.image_files import image_dataset
from ssl_keras.data.image_files import list_image_files
from ssl_keras.data.image_files import scan_images


@pytest.fixture(scope="module")
def unlabeled_files(shared_data):
    """Four RGB and two grayscale (mode L) JPEGs from the shared unlabeled pool."""
    folder = shared_data / "unlabeled"
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rgb = [folder / row["file"] for row in rows if row["mode"] == "RGB"][:4]
    gray = [folder / row["file"] for row in rows if row["mode"] == "L"][:2]
    return rgb, gray


@pytest.fixture
def messy_folder(tmp_path, unlabeled_files):
    """A folder of good images (nested, mixed case, PNG) mixed with broken files."""
    rgb, gray = unlabeled_files
    nested = tmp_path / "sub" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(rgb[0], tmp_path / "a.jpg")
    shutil.copy(rgb[1], tmp_path / "B.JPG")
    shutil.copy(rgb[2], nested / "c.jpeg")
    shutil.copy(gray[0], tmp_path / "gray1.jpg")
    shutil.copy(gray[1], nested / "gray2.jpg")
    with Image.open(rgb[3]) as image:
        image.convert("RGBA").save(tmp_path / "sub" / "d.png")
        image.save(tmp_path / "e.bmp")
    good = 7

    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    data = rgb[0].read_bytes()
    (nested / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.txt").write_text("ignored: not an image extension\n")
    (tmp_path / "image.jpg.bak").write_bytes(data)
    return tmp_path, good


def test_list_image_files_recursive_sorted_filtered(messy_folder):
    root, good = messy_folder
    paths = list_image_files(root)
    assert paths == sorted(paths)
    names = {p.split("/")[-1] for p in paths}
    assert names == {
        "a.jpg", "B.JPG", "c.jpeg", "gray1.jpg", "gray2.jpg", "d.png", "e.bmp",
        "empty.jpg", "text.jpg", "cut.jpg",
    }  # fmt: skip
    assert len(paths) == good + 3


def test_list_image_files_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        list_image_files(tmp_path / "missing")


def test_scan_reports_each_broken_file(messy_folder):
    root, good = messy_folder
    good_paths, skipped, skipped_files = scan_images(list_image_files(root))
    assert len(good_paths) == good
    assert skipped == {
        image_files.EMPTY: 1,
        image_files.NOT_AN_IMAGE: 1,
        image_files.TRUNCATED: 1,
    }
    reasons = {path.split("/")[-1]: reason for path, reason in skipped_files}
    assert reasons == {
        "empty.jpg": image_files.EMPTY,
        "text.jpg": image_files.NOT_AN_IMAGE,
        "cut.jpg": image_files.TRUNCATED,
    }


def test_scan_threaded_matches_serial(messy_folder):
    root, _ = messy_folder
    paths = list_image_files(root) * 10  # over the threading threshold
    assert scan_images(paths, num_workers=4) == scan_images(paths, num_workers=1)


def test_scan_flags_missing_and_unsupported(tmp_path, unlabeled_files):
    with Image.open(unlabeled_files[0][0]) as image:
        image.save(tmp_path / "tiff.jpg", format="TIFF")
    result = scan_images([tmp_path / "tiff.jpg", tmp_path / "gone.jpg"])
    assert result.skipped == {image_files.UNSUPPORTED: 1, image_files.MISSING: 1}
    assert result.good_paths == []


def test_dataset_yields_every_good_image(messy_folder):
    root, good = messy_folder
    good_paths, _, _ = scan_images(list_image_files(root))
    dataset = image_dataset(good_paths, image_size=48, batch_size=3, seed=1, drop_remainder=False)
    batches = [batch.numpy() for batch in dataset]
    assert [len(batch) for batch in batches] == [3, 3, 1]
    images = np.concatenate(batches)
    assert images.shape == (good, 48, 48, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert images.max() > 100.0  # real photos, not a blank canvas


def test_dataset_skips_undecodable_files_as_safety_net(messy_folder):
    root, good = messy_folder
    # Without a scan, ignore_errors() still drops the three broken files.
    dataset = image_dataset(
        list_image_files(root), image_size=32, batch_size=4, shuffle=False,
        drop_remainder=False,
    )  # fmt: skip
    assert sum(len(batch) for batch in dataset) == good


def test_grayscale_becomes_three_equal_channels(unlabeled_files):
    _, gray = unlabeled_files
    dataset = image_dataset([str(p) for p in gray], image_size=64, batch_size=2)
    (batch,) = list(dataset)
    assert batch.shape == (2, 64, 64, 3)
    batch = batch.numpy()
    np.testing.assert_array_equal(batch[..., 0], batch[..., 1])
    np.testing.assert_array_equal(batch[..., 0], batch[..., 2])


def test_pixels_match_pillow(unlabeled_files):
    path = unlabeled_files[0][0]
    dataset = image_dataset([str(path)], image_size=224, batch_size=1, shuffle=False)
    (batch,) = list(dataset)
    with Image.open(path) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.float32)
    # Same size, so no resampling: only JPEG decoder differences remain.
    assert np.abs(batch.numpy()[0] - expected).mean() < 2.0


def test_shuffle_is_seeded_and_drop_remainder(unlabeled_files):
    rgb, gray = unlabeled_files
    paths = [str(p) for p in rgb + gray]

    def order(seed):
        dataset = image_dataset(paths, image_size=16, batch_size=4, seed=seed)
        batches = [batch.numpy() for batch in dataset]
        assert [len(batch) for batch in batches] == [4]  # 6 images, remainder dropped
        return batches[0]

    np.testing.assert_array_equal(order(7), order(7))
    plain = image_dataset(paths, image_size=16, batch_size=6, shuffle=False)
    shuffled = [order(seed) for seed in range(5)]
    assert any(not np.array_equal(s, next(iter(plain)).numpy()[:4]) for s in shuffled)


def test_repeat_goes_past_one_epoch(unlabeled_files):
    rgb, _ = unlabeled_files
    paths = [str(p) for p in rgb]
    dataset = image_dataset(paths, image_size=16, batch_size=3, repeat=True)
    assert len(list(dataset.take(5))) == 5


def test_invalid_arguments():
    with pytest.raises(ValueError, match="paths=\\[\\]"):
        image_dataset([], image_size=16, batch_size=2)
    with pytest.raises(ValueError, match="batch_size=0"):
        image_dataset(["x.jpg"], image_size=16, batch_size=0)
