"""File names that are not UTF-8 (a Latin-1 `caf\\xe9.jpg`) are read, in every loader.

Python lists such a name as a str with surrogate escapes, which `tf.constant` refused
("Error converting unicode string ... to Tensor"), aborting the whole run.
"""

import os

import numpy as np
from bad_files import good_jpeg
from voc_devkit import copy_devkit

from ssl_keras.data import image_files
from ssl_keras.data.labelled_images import labelled_dataset, load_labelled_source, read_manifest
from ssl_keras.data.localization import load_localization_data
from ssl_keras.data.unlabeled_images import load_image_source


def latin1_images(folder, count, prefix=b"caf\xe9"):
    """`count` JPEGs whose names hold the Latin-1 byte 0xE9; returns their str paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        path = good_jpeg(folder, name=f"tmp{i}.jpg", seed=i)
        target = os.path.join(os.fsencode(folder), prefix + f"{i}.jpg".encode())
        os.rename(path, target)
        paths.append(os.fsdecode(target))
    return paths


def test_an_image_folder_with_latin1_names_is_read(tmp_path):
    paths = latin1_images(tmp_path / "photos", 8)
    assert all("\udce9" in path for path in paths)  # Surrogate escapes, as os.walk gives.
    source = load_image_source(str(tmp_path / "photos"), image_size=16, batch_size=8)
    assert source.num_images == 8 and source.skipped == {}
    assert next(iter(source.stream(0))).shape == (8, 16, 16, 3)
    assert next(iter(source.dataset)).shape == (8, 16, 16, 3)


def test_labelled_images_with_latin1_names_are_read(tmp_path):
    for name in ("cats", "dogs"):
        latin1_images(tmp_path / "classes" / name, 6)
    source = load_labelled_source(f"folder:{tmp_path / 'classes'}", image_size=16, batch_size=4)
    assert source.num_images + source.num_validation == 12 and source.skipped_files == []
    images, labels = next(iter(source.stream(0)))
    assert images.shape == (4, 16, 16, 3)
    items = [(path, 0) for path in latin1_images(tmp_path / "more", 3)]
    dataset, _ = labelled_dataset(items, image_size=16, batch_size=3)
    assert next(iter(dataset))[0].shape == (3, 16, 16, 3)


def test_a_voc_id_in_latin1_is_read(tmp_path, shared_data):
    root = tmp_path / "VOC2007"
    ids = copy_devkit(shared_data / "voc2007", root)
    old = ids["train"][0]
    new = b"caf\xe9" + old.encode()
    raw_root = os.fsencode(root)
    for folder, extension in ((b"Annotations", b".xml"), (b"JPEGImages", b".jpg")):
        os.rename(
            os.path.join(raw_root, folder, old.encode() + extension),
            os.path.join(raw_root, folder, new + extension),
        )
    listing = root / "ImageSets" / "Main" / "train.txt"
    listing.write_bytes(listing.read_bytes().replace(old.encode(), new))
    data = load_localization_data(f"voc:{root}", image_size=32, batch_size=8)
    assert os.fsdecode(new) in data.train_ids and len(data.train_ids) == len(ids["train"])
    images, targets = next(iter(data.train))
    assert images.shape[0] == len(ids["train"])
    stream_images, _ = next(iter(data.train_stream(0)))
    assert stream_images.shape[0] == len(ids["train"])
    assert np.isfinite(
        image_files.load_rgb(os.fsdecode(os.path.join(raw_root, b"JPEGImages", new + b".jpg")))
    ).all()


def test_a_manifest_listing_latin1_names_is_read(tmp_path):
    paths = latin1_images(tmp_path, 4)
    rows = [b"file,wnid,imagenette_split"]
    for i, path in enumerate(paths):
        name = os.path.basename(os.fsencode(path))
        rows.append(name + (b",n01,train" if i < 2 else b",n02,val"))
    (tmp_path / "manifest.csv").write_bytes(b"\n".join(rows) + b"\n")  # Latin-1 bytes.
    listing = read_manifest(tmp_path)
    assert sorted(p for p, _ in listing["train"] + listing["test"]) == sorted(paths)
    source = load_labelled_source(
        f"manifest:{tmp_path / 'manifest.csv'}", image_size=16, batch_size=2
    )
    assert source.num_images == 2 and source.skipped_files == []
