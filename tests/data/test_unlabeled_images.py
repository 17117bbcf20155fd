import shutil

import numpy as np
import pytest

from ssl_keras.data import tfds_builder
from ssl_keras.data.source_spec import SourceError
from ssl_keras.data.source_spec import SourceSpec
from ssl_keras.data.source_spec import parse_source
from ssl_keras.data.unlabeled_images import load_image_source
from ssl_keras.data.unlabeled_images import skipped_report


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("synthetic", dict(kind="synthetic", num_images=512)),
        ("synthetic:64", dict(kind="synthetic", num_images=64)),
        ("tfds:cifar10", dict(kind="tfds", name="cifar10", split="train")),
        ("tfds:cifar10:test", dict(kind="tfds", name="cifar10", split="test")),
        ("tfds:cifar10:train[:10%]", dict(kind="tfds", name="cifar10", split="train[:10%]")),
        ("tfds:cifar10:3.0.2:test", dict(kind="tfds", name="cifar10:3.0.2", split="test")),
        ("tfds:imagenet2012/subset", dict(kind="tfds", name="imagenet2012/subset")),
        ("voc:/d/VOC2007", dict(kind="voc", path="/d/VOC2007", split=None)),
        ("voc:/d/VOC2007:train", dict(kind="voc", path="/d/VOC2007", split="train")),
        ("voc:rel/VOC2007:val", dict(kind="voc", path="rel/VOC2007", split="val")),
        ("voc:C:\\d\\VOC2007", dict(kind="voc", path="C:\\d\\VOC2007", split=None)),
        ("/some/photos", dict(kind="folder", path="/some/photos")),
        ("photos", dict(kind="folder", path="photos")),
    ],
)
def test_parse_source_forms(spec, expected):
    parsed = parse_source(spec)
    assert isinstance(parsed, SourceSpec)
    assert parsed.spec == spec
    for field, value in expected.items():
        assert getattr(parsed, field) == value, field


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty source spec"),
        ("synthetic:abc", "positive integer"),
        ("synthetic:0", "positive integer"),
        ("tfds:", "tfds:NAME"),
        ("voc:", "voc:PATH"),
        ("s3://bucket/images", "unknown scheme 's3'"),
        ("gcs:images", "unknown scheme 'gcs'"),
    ],
)
def test_parse_source_errors(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_source(spec)


def test_source_error_is_value_error():
    assert issubclass(SourceError, ValueError)


def test_existing_folder_with_colon_is_a_folder(tmp_path):
    folder = tmp_path / "run:1"
    folder.mkdir()
    assert parse_source(str(folder)).kind == "folder"


def test_missing_folder_names_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceError, match=f"{missing} does not exist"):
        load_image_source(str(missing), image_size=32, batch_size=2)


def test_empty_folder_names_path_and_fix(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=f"folder {tmp_path} holds no .*synthetic"):
        load_image_source(str(tmp_path), image_size=32, batch_size=2)


def test_missing_voc_folder_and_split(tmp_path, shared_data):
    with pytest.raises(SourceError, match="does not exist"):
        load_image_source(f"voc:{tmp_path}/VOC2007", image_size=32, batch_size=2)
    with pytest.raises(SourceError, match="no JPEGImages/"):
        load_image_source(f"voc:{tmp_path}", image_size=32, batch_size=2)
    voc = shared_data / "voc2007"
    with pytest.raises(SourceError, match=r"no image set .*available splits: test, train, val"):
        load_image_source(f"voc:{voc}:trainval", image_size=32, batch_size=2)


def _count_images(source):
    return sum(int(batch.shape[0]) for batch in source.dataset)


def test_voc_all_images(shared_data):
    voc = shared_data / "voc2007"
    source = load_image_source(f"voc:{voc}", image_size=32, batch_size=5, seed=0)
    assert source.num_images == 865 and source.steps_per_epoch == 173
    assert source.skipped == {} and source.skipped_files == []
    assert "865 images" in source.description
    assert _count_images(source) == 865


@pytest.mark.large
def test_voc_split(shared_data):
    voc = shared_data / "voc2007"
    source = load_image_source(f"voc:{voc}:train", image_size=32, batch_size=5)
    assert source.num_images == 430 and source.steps_per_epoch == 86
    assert _count_images(source) == 430


@pytest.mark.large
def test_folder_source_skips_broken_files(tmp_path, shared_data):
    files = sorted((shared_data / "unlabeled").glob("*.jpg"))[:5]
    for path in files:
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "broken.jpg").write_bytes(b"")
    source = load_image_source(str(tmp_path), image_size=24, batch_size=2, seed=1)
    assert source.num_images == 5 and source.steps_per_epoch == 2
    assert source.skipped == {"empty file": 1}
    assert source.skipped_files == [(str(tmp_path / "broken.jpg"), "empty file")]
    batches = [batch.numpy() for batch in source.dataset]
    assert [b.shape for b in batches] == [(2, 24, 24, 3)] * 2  # remainder dropped
    assert all(b.dtype == np.float32 and 0 <= b.min() and b.max() <= 255 for b in batches)


def test_folder_of_only_broken_files(tmp_path):
    (tmp_path / "a.jpg").write_text("not a jpeg")
    with pytest.raises(SourceError, match="none of the 1 image files"):
        load_image_source(str(tmp_path), image_size=24, batch_size=1)


def test_fewer_images_than_a_batch():
    with pytest.raises(SourceError, match="fewer than one batch of 16"):
        load_image_source("synthetic:8", image_size=24, batch_size=16)


def test_synthetic_source():
    source = load_image_source("synthetic:20", image_size=32, batch_size=8, seed=3)
    assert source.num_images == 20 and source.steps_per_epoch == 2
    batches = [batch.numpy() for batch in source.dataset]
    assert [b.shape for b in batches] == [(8, 32, 32, 3)] * 2
    again = [batch.numpy() for batch in source.dataset]
    # A new order every pass, from the same 20 images.
    assert not np.array_equal(batches[0], again[0])


def test_tfds_offline_error_is_fast_and_suggests_voc(offline_tfds_error):
    message = offline_tfds_error(load_image_source, "tfds:cifar10", image_size=32, batch_size=8)
    assert "voc:PATH" in message and "tfds build cifar10" in message
    assert "\n" not in message


def test_tfds_offline_error_with_mocked_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tfds_builder, "network_available", lambda: False)
    with pytest.raises(SourceError, match="voc:PATH"):
        load_image_source("tfds:mnist:test", image_size=32, batch_size=8)


def test_tfds_unknown_dataset():
    with pytest.raises(SourceError, match="no_such_dataset_xyz"):
        load_image_source("tfds:no_such_dataset_xyz", image_size=32, batch_size=8)


def test_skipped_report():
    assert skipped_report([]) == ""
    files = [(f"/d/{i}.jpg", "truncated") for i in range(23)]
    lines = skipped_report(files).splitlines()
    assert lines[0] == "skipped 23 undecodable files:"
    assert lines[1] == "  /d/0.jpg: truncated"
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  ... and 3 more"
    assert skipped_report(files[:2], limit=5).count("\n") == 2


@pytest.mark.parametrize("spec", ["tfds:cifar10", "tfds:mnist:test"])
def test_tfds_prepared_dataset_pipeline(spec, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    # mock_data fakes a prepared dataset (random examples); mnist is grayscale.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=20):
        source = load_image_source(spec, image_size=24, batch_size=8, seed=0)
        batches = [batch.numpy() for batch in source.dataset]
    assert source.num_images == 20 and source.steps_per_epoch == 2
    assert [b.shape for b in batches] == [(8, 24, 24, 3)] * 2
    assert all(b.dtype == np.float32 and 0 <= b.min() and b.max() <= 255 for b in batches)
