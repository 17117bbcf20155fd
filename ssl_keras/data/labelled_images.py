"""Labelled image listings: a manifest CSV, or a folder with one sub-folder per class.

Used by the probes and by supervised pretraining. Both list `(path, label)` items split into
train and test, deterministically:

- a manifest CSV (columns `file`, `wnid`, `imagenette_split`, as in the shared Imagenette
  sample): class = `wnid`, train = rows of split `train`, test = rows of split `val`; files are
  relative to the CSV's folder;
- a folder with one sub-folder per class: a deterministic 80/20 train/test split per class, by
  the SHA-1 of each file's path relative to the folder.
"""

import collections
import csv
import dataclasses
import functools
import hashlib
import os
import typing

import numpy as np
import tensorflow as tf

from ssl_keras.data import epoch_stream, image_files
from ssl_keras.data.source_spec import SourceError, check_batch_size

MANIFEST_COLUMNS = ("file", "wnid", "imagenette_split")
MANIFEST_SPLITS = {"train": "train", "val": "test"}
"""Manifest split value -> probe split."""

FOLDER_TEST_FRACTION = 0.2


def hash_key(seed, text):
    return hashlib.sha1(f"{seed}:{text}".encode("utf-8", "surrogateescape")).hexdigest()


def cap_per_class(items, max_per_class, seed):
    """Keeps at most `max_per_class` `(path, label)` items per class, chosen by a seeded hash;
    the kept items keep their original order."""
    if max_per_class is None:
        return list(items)
    if int(max_per_class) < 1:
        raise ValueError(f"`max_per_class` must be >= 1. Received: max_per_class={max_per_class}")
    by_class = collections.defaultdict(list)
    for position, (path, label) in enumerate(items):
        by_class[label].append((hash_key(seed, os.path.basename(path)), position))
    keep = sorted(
        position
        for entries in by_class.values()
        for _, position in sorted(entries)[: int(max_per_class)]
    )
    return [items[position] for position in keep]


def read_manifest(path, *, max_per_class=None, seed=0):
    """Reads a labelled image manifest (the shared Imagenette sample's `manifest.csv`).

    Args:
        path: a CSV file, or a folder holding `manifest.csv`. Columns `file` (relative to the
            CSV's folder), `wnid` (the class) and `imagenette_split` (`train` or `val`) are
            needed; others are ignored.
        max_per_class: int or None, the most images kept per class and split, picked by a
            seeded SHA-1 of the file name (the same arguments always keep the same files).
            Defaults to None (all).
        seed: int, the subsampling seed. Defaults to 0.

    Returns:
        A dict: `"class_names"` (sorted wnids), `"train"` and `"test"` (lists of
        `(path, label)` in manifest order; `val` rows form the test split).
    """
    path = os.fspath(path)
    csv_path = os.path.join(path, "manifest.csv") if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise SourceError(
            f"manifest {csv_path} does not exist; give a manifest CSV or a folder holding manifest.csv"
        )
    root = os.path.dirname(os.path.abspath(csv_path))
    with open(csv_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SourceError(
                f"manifest {csv_path}: missing column(s) {', '.join(missing)}; it needs "
                f"{', '.join(MANIFEST_COLUMNS)}. Received columns: {reader.fieldnames}"
            )
        rows = list(reader)
    if not rows:
        raise SourceError(f"manifest {csv_path} has no rows")
    class_names = tuple(sorted({row["wnid"] for row in rows}))
    index = {name: i for i, name in enumerate(class_names)}
    splits = {"train": [], "test": []}
    for number, row in enumerate(rows, start=2):
        split = MANIFEST_SPLITS.get(row["imagenette_split"].strip())
        if split is None:
            raise SourceError(
                f"manifest {csv_path} line {number}: imagenette_split must be one of "
                f"{', '.join(MANIFEST_SPLITS)}. Received: {row['imagenette_split']!r}"
            )
        splits[split].append((os.path.join(root, row["file"]), index[row["wnid"]]))
    for split, items in splits.items():
        if not items:
            raise SourceError(
                f"manifest {csv_path} has no rows for the {split} split "
                f"(imagenette_split {'train' if split == 'train' else 'val'})"
            )
    return {
        "class_names": class_names,
        "train": cap_per_class(splits["train"], max_per_class, seed),
        "test": cap_per_class(splits["test"], max_per_class, seed),
        "source": csv_path,
    }


def read_class_folders(path, *, max_per_class=None, seed=0, test_fraction=FOLDER_TEST_FRACTION):
    """Lists a folder with one sub-folder of images per class and splits it per class.

    Within each class, files are ordered by the SHA-1 of their path relative to `path`; the
    first `round(test_fraction * n)` (at least 1 when a class has 2 or more images) form the
    test split. `max_per_class` then caps each split as in `read_manifest`.

    Returns:
        A dict like `read_manifest`'s.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise SourceError(
            f"image folder {path} does not exist; give a folder with one sub-folder per class"
        )
    class_names, files = [], {}
    for name in sorted(os.listdir(path)):
        folder = os.path.join(path, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        found = image_files.list_image_files(folder)
        if found:
            class_names.append(name)
            files[name] = found
    if len(class_names) < 2:
        raise SourceError(
            f"image folder {path} needs one sub-folder of images per class (at least 2 classes); "
            f"found {len(class_names)}. Use manifest:CSV or folder:PATH"
        )
    splits = {"train": [], "test": []}
    for label, name in enumerate(class_names):
        ordered = sorted(
            files[name],
            key=lambda p: hashlib.sha1(
                os.path.relpath(p, path).encode("utf-8", "surrogateescape")
            ).hexdigest(),
        )
        num_test = (
            max(1, int(np.floor(test_fraction * len(ordered) + 0.5))) if len(ordered) >= 2 else 0
        )
        splits["test"] += [(p, label) for p in sorted(ordered[:num_test])]
        splits["train"] += [(p, label) for p in sorted(ordered[num_test:])]
    return {
        "class_names": tuple(class_names),
        "train": cap_per_class(splits["train"], max_per_class, seed),
        "test": cap_per_class(splits["test"], max_per_class, seed),
        "source": path,
    }


LABELLED_SPEC_FORMS = (
    "manifest:CSV, a folder holding manifest.csv, or folder:PATH (one sub-folder of images "
    "per class)"
)


def parse_labelled_spec(spec):
    """`("manifest", PATH)` or `("folder", PATH)` for a labelled-image spec, or None if it is neither.

    `manifest:CSV`, a `.csv` file or a folder holding `manifest.csv` is a manifest; `folder:PATH`
    or any other existing folder is a folder of class sub-folders.
    """
    text = os.fspath(spec).strip()
    if text.startswith("manifest:"):
        return "manifest", text[len("manifest:") :]
    if text.startswith("folder:"):
        return "folder", text[len("folder:") :]
    if text.endswith(".csv") or os.path.isfile(os.path.join(text, "manifest.csv")):
        return "manifest", text
    if os.path.isdir(text):
        return "folder", text
    return None


def read_labelled(spec, *, max_per_class=None, seed=0):
    """Lists a labelled image source given as `manifest:CSV`, a folder holding `manifest.csv`,
    or `folder:PATH` (class sub-folders); returns the dict of `read_manifest`."""
    parsed = parse_labelled_spec(spec)
    if parsed is None:
        raise SourceError(
            f"labelled data {spec!r}: not a manifest or an existing folder; use {LABELLED_SPEC_FORMS}"
        )
    kind, path = parsed
    reader = read_manifest if kind == "manifest" else read_class_folders
    return reader(path, max_per_class=max_per_class, seed=seed)


def keep_readable(items, *, image_size=None):
    """The `(path, label)` items whose files decode (`image_files.scan_images`), and the scan.

    Returns:
        `(kept_items, scan)`: the items in their order, without the undecodable files, and the
        `ScanResult` with what was skipped or repaired.
    """
    scan = image_files.scan_images([p for p, _ in items], image_size=image_size)
    good = set(scan.good_paths)
    return [item for item in items if item[0] in good], scan


def labelled_dataset(items, *, image_size, batch_size):
    """A fixed-order `tf.data.Dataset` of `(images, labels)` batches of `(path, label)` items.

    Returns:
        `(dataset, labels)`: the batches (the last short one kept; images float32 in [0, 255],
        stretched to `image_size`) and the int32 labels in dataset order.
    """
    paths = [p for p, _ in items]
    labels = np.asarray([label for _, label in items], "int32")
    dataset = tf.data.Dataset.from_tensor_slices((image_files.path_tensor(paths), labels))
    dataset = dataset.map(
        lambda p, y: (image_files.read_image(p, image_size=image_size), y),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), labels


@dataclasses.dataclass
class LabelledSource:
    """Labelled images for supervised training.

    Attributes:
        stream: function `start_batch -> tf.data.Dataset`, an endless stream of `(images
            float32 [B, S, S, 3] in [0, 255], labels int32 [B])` batches of the train split, in
            the resumable order of `epoch_stream`.
        validation: `tf.data.Dataset` of the test split's batches, in a fixed order (the last
            short batch kept).
        class_names: tuple of str; labels index into it.
        num_images: int, usable train images.
        num_validation: int, usable test images.
        steps_per_epoch: int, full train batches in one pass.
        skipped_files: list of `(path, reason)`, files of either split left out.
        repaired_files: list of `(path, reason)`, files read after a conversion.
        description: str, one line for logs.
    """

    stream: typing.Callable
    validation: typing.Any
    class_names: tuple
    num_images: int
    num_validation: int
    steps_per_epoch: int
    skipped_files: list
    repaired_files: list
    description: str

    @property
    def skipped(self):
        return dict(collections.Counter(reason for _, reason in self.skipped_files))

    @property
    def repaired(self):
        return dict(collections.Counter(reason for _, reason in self.repaired_files))


def load_labelled_source(spec, *, image_size, batch_size, seed=0):
    """Opens a labelled image source for supervised pretraining.

    Every file is checked once (`image_files.scan_images`); undecodable files are left out and
    reported in `skipped_files`.

    Args:
        spec: str, see `read_labelled`.
        image_size: int, images are resized (stretched, bilinear) to `S x S`.
        batch_size: int, images per training batch.
        seed: int, the order seed of the training stream. Defaults to 0.

    Returns:
        A `LabelledSource`.

    Raises:
        SourceError: not a labelled source, no readable image in a split, or fewer train
            images than one batch.

    Example:

    >>> source = load_labelled_source("../shared/data/unlabeled", image_size=64, batch_size=64)
    >>> source.class_names[:2], source.num_images
    (('n01440764', 'n02102040'), 5983)
    """
    listing = read_labelled(spec, seed=seed)
    splits, skipped_files, repaired_files = {}, [], []
    for split in ("train", "test"):
        splits[split], scan = keep_readable(listing[split], image_size=image_size)
        skipped_files += scan.skipped_files
        repaired_files += scan.repaired_files
        if not splits[split]:
            raise SourceError(
                f"labelled data {spec!r}: the {split} split has no readable image "
                f"({len(scan.skipped_files)} left out)"
            )
    train, test = splits["train"], splits["test"]
    check_batch_size(len(train), batch_size, f"labelled data {spec!r} (train split)")
    read = functools.partial(image_files.read_image, image_size=image_size)
    items = (
        image_files.path_tensor([p for p, _ in train]),
        tf.constant([label for _, label in train], tf.int32),
    )
    stream = functools.partial(
        epoch_stream.epoch_stream,
        items,
        lambda row: (read(row[0]), row[1]),
        num_items=len(train),
        batch_size=batch_size,
        seed=seed,
        ignore_errors=True,
        names=items[0],
    )
    validation, _ = labelled_dataset(test, image_size=image_size, batch_size=batch_size)
    description = (
        f"labelled {listing['source']}: {len(train)} train / {len(test)} validation images, "
        f"{len(listing['class_names'])} classes"
        + (f", {len(skipped_files)} skipped" if skipped_files else "")
    )
    return LabelledSource(
        stream=lambda start_batch: stream(start_batch=start_batch),
        validation=validation,
        class_names=tuple(listing["class_names"]),
        num_images=len(train),
        num_validation=len(test),
        steps_per_epoch=len(train) // batch_size,
        skipped_files=skipped_files,
        repaired_files=repaired_files,
        description=description,
    )
