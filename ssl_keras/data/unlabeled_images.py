"""Pretraining image sources named by one string: synthetic, TFDS, VOC or a folder.

Spec forms:

- `synthetic` or `synthetic:N`: the embedded procedural set (`N` images, default 512).
- `tfds:NAME[:SPLIT]`: a TensorFlow Datasets dataset (split defaults to `train`; `NAME` may
  carry a config and version, `tfds:cifar10:3.0.2:test`). Offline, only datasets already
  prepared in the TFDS data dir (env `TFDS_DATA_DIR`, default `~/tensorflow_datasets`) work.
- `voc:PATH[:SPLIT]`: a VOCdevkit year folder (`.../VOC2007`); all of `JPEGImages/`, or the
  ids in `ImageSets/Main/SPLIT.txt`.
- anything else: a folder of images, searched recursively.
"""

import dataclasses
import functools
import os
import typing

import tensorflow as tf

from ssl_keras.data import epoch_stream
from ssl_keras.data import image_files
from ssl_keras.data import synthetic
from ssl_keras.data.source_spec import (
    SourceError,
    SourceSpec,
    check_batch_size,
    existing_folder,
    parse_source,
)
from ssl_keras.data.tfds_builder import tfds_builder
from ssl_keras.data.voc import read_image_set

_MAX_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """A ready-to-train image source.

    Attributes:
        dataset: `tf.data.Dataset` of float32 batches `[B, H, W, 3]` in [0, 255], last short
            batch dropped, one pass per iteration (call `.repeat()` for more).
        num_images: int, images per pass before dropping the last short batch.
        steps_per_epoch: int, `num_images // batch_size`.
        skipped: dict, reason -> count of files left out as undecodable.
        skipped_files: list of `(path, reason)`, the files left out.
        description: str, one line saying what the source is, for logs.
        stream: function `start_batch -> tf.data.Dataset`, an endless batch stream whose
            pass p is ordered by `(seed, p)` and which can start at any batch (see
            `epoch_stream.py`), for resumable training; None for TFDS sources.
        repaired: dict, repair reason -> count of files read after a conversion (e.g.
            `"grayscale converted to RGB"`; see `image_files.REPAIRS`).
        repaired_files: list of `(path, reason)`, the files read after a conversion.
    """

    dataset: tf.data.Dataset
    num_images: int
    steps_per_epoch: int
    skipped: dict
    skipped_files: list
    description: str
    stream: typing.Optional[typing.Callable] = None
    repaired: dict = dataclasses.field(default_factory=dict)
    repaired_files: list = dataclasses.field(default_factory=list)


def _files_report(files, title, limit):
    if not files:
        return ""
    count = len(files)
    lines = [title.format(count=count, s="s" if count != 1 else "")]
    lines += [f"  {path}: {reason}" for path, reason in files[:limit]]
    if count > limit:
        lines.append(f"  ... and {count - limit} more")
    return "\n".join(lines)


def skipped_report(skipped_files, *, limit=20):
    """Formats the skipped files, one line each, for logs.

    Args:
        skipped_files: list of `(path, reason)`.
        limit: int, how many files to list before summarizing the rest. Defaults to 20.

    Returns:
        str, empty when nothing was skipped.

    Example:

    >>> print(skipped_report([("a.jpg", "truncated")]))
    skipped 1 undecodable file:
      a.jpg: truncated
    """
    return _files_report(skipped_files, "skipped {count} undecodable file{s}:", limit)


def repaired_report(repaired_files, *, limit=20):
    """Formats the files read after a conversion, one line each, for logs.

    Args:
        repaired_files: list of `(path, reason)`, e.g. `ImageSource.repaired_files`.
        limit: int, how many files to list before summarizing the rest. Defaults to 20.

    Returns:
        str, empty when no file needed a conversion.

    Example:

    >>> print(repaired_report([("scan.png", "grayscale converted to RGB")]))
    read 1 file after a conversion:
      scan.png: grayscale converted to RGB
    """
    return _files_report(repaired_files, "read {count} file{s} after a conversion:", limit)


def _count_phrase(counts):
    """`{"truncated": 2, "empty file": 1}` -> `"2 truncated, 1 empty file"`."""
    return ", ".join(f"{count} {reason}" for reason, count in counts.items())


def _files_source(paths, spec, *, image_size, batch_size, seed, shuffle, description):
    scan = image_files.scan_images(paths, image_size=image_size)
    good_paths, skipped, skipped_files = scan.good_paths, scan.skipped, scan.skipped_files
    if not good_paths:
        examples = "; ".join(f"{path}: {reason}" for path, reason in skipped_files[:3])
        more = f"; ... and {len(skipped_files) - 3} more" if len(skipped_files) > 3 else ""
        raise SourceError(
            f"source {spec!r}: none of the {len(paths)} image files can be decoded "
            f"({_count_phrase(skipped)}: {examples}{more}); replace or re-export the files, "
            "or point to another folder"
        )
    check_batch_size(len(good_paths), batch_size, f"source {spec!r}")
    dataset = image_files.image_dataset(
        good_paths, image_size=image_size, batch_size=batch_size, shuffle=shuffle, seed=seed
    )
    stream = functools.partial(
        epoch_stream.epoch_stream,
        image_files.path_tensor(good_paths),
        functools.partial(image_files.read_image, image_size=image_size),
        num_items=len(good_paths),
        batch_size=batch_size,
        seed=seed or 0,
        shuffle=shuffle,
        ignore_errors=True,
    )
    return ImageSource(
        dataset=dataset,
        num_images=len(good_paths),
        steps_per_epoch=len(good_paths) // batch_size,
        skipped=skipped,
        skipped_files=skipped_files,
        description=f"{description}: {len(good_paths)} images"
        + (f", {len(skipped_files)} skipped" if skipped_files else "")
        + (f", {len(scan.repaired_files)} converted" if scan.repaired_files else ""),
        stream=lambda start_batch: stream(start_batch=start_batch),
        repaired=scan.repaired,
        repaired_files=scan.repaired_files,
    )


def _folder_source(parsed, **kwargs):
    existing_folder(parsed.path, parsed.spec, "folder")
    paths = image_files.list_image_files(parsed.path)
    if not paths:
        extensions = ", ".join(image_files.IMAGE_EXTENSIONS)
        others = sum(len(names) for _, names in image_files.walk_folders(parsed.path))
        found = f"only {others} other file{'s' if others != 1 else ''}" if others else "nothing"
        raise SourceError(
            f"source {parsed.spec!r}: folder {parsed.path} holds no image files ({extensions}; "
            f"searched recursively, found {found}); point --data at a folder of photos, "
            "or use synthetic"
        )
    return _files_source(paths, parsed.spec, description=f"image folder {parsed.path}", **kwargs)


def _voc_source(parsed, **kwargs):
    existing_folder(parsed.path, parsed.spec, "VOC folder")
    jpeg_dir = os.path.join(parsed.path, "JPEGImages")
    if not os.path.isdir(jpeg_dir):
        raise SourceError(
            f"source {parsed.spec!r}: {parsed.path} has no JPEGImages/ folder; give the "
            "VOCdevkit year folder, e.g. voc:VOCdevkit/VOC2007"
        )
    if parsed.split is None:
        paths = image_files.list_image_files(jpeg_dir)
        description = f"VOC {parsed.path} (all JPEGImages)"
    else:
        ids = read_image_set(parsed.path, parsed.split)
        paths = [os.path.join(jpeg_dir, f"{image_id}.jpg") for image_id in ids]
        description = f"VOC {parsed.path} split {parsed.split}"
    if not paths:
        raise SourceError(
            f"source {parsed.spec!r}: no images listed in {parsed.path}; check the VOC folder"
        )
    return _files_source(paths, parsed.spec, description=description, **kwargs)


def _unscanned_source(dataset, num_images, batch_size, description, stream=None):
    """The `ImageSource` of decoded data (TFDS, synthetic): no file is skipped or converted."""
    return ImageSource(
        dataset=dataset,
        num_images=num_images,
        steps_per_epoch=num_images // batch_size,
        skipped={},
        skipped_files=[],
        description=description,
        stream=stream,
    )


def _tfds_source(parsed, *, image_size, batch_size, seed, shuffle):
    import tensorflow_datasets as tfds  # Slow import, and only this branch needs it.

    spec, name, split = parsed.spec, parsed.name, parsed.split
    builder = tfds_builder(
        name,
        context=f"source {spec!r}",
        unknown_hint="check the name with `tfds build --help` or the TFDS catalog",
        offline_hint=(
            "use voc:PATH or a local image folder, or prepare it on a connected machine with "
            f"`tfds build {name}` (or a manual_dir) and copy the data dir over"
        ),
    )
    if "image" not in builder.info.features:
        raise SourceError(
            f"source {spec!r}: TFDS dataset {name!r} has no 'image' feature "
            f"(features: {', '.join(builder.info.features)}); choose an image dataset"
        )
    try:
        builder.download_and_prepare()
        dataset = builder.as_dataset(
            split=split,
            shuffle_files=shuffle,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
        num_images = int(dataset.cardinality())
        if num_images < 0:  # Unknown or infinite: fall back on the metadata.
            num_images = builder.info.splits[split].num_examples
    except Exception as error:  # noqa: BLE001 - download and split errors vary.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SourceError(
            f"source {spec!r}: TFDS could not load split {split!r} of {name!r} "
            f"({type(error).__name__}: {first_line}); check the split name, or use voc:PATH "
            "or a local image folder"
        ) from error
    check_batch_size(num_images, batch_size, f"source {spec!r}")

    def to_image(example):
        image = example["image"]
        if image.shape.rank == 2:
            image = image[..., None]
        # Grayscale datasets (MNIST) have one channel; alpha channels are dropped.
        image = image[..., :3]
        image = tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        return tf.clip_by_value(image, 0.0, 255.0)

    dataset = dataset.map(
        to_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None
    )
    if shuffle:
        buffer = min(num_images, _MAX_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _unscanned_source(
        dataset, num_images, batch_size, f"TFDS {name} split {split}: {num_images} images"
    )


def _synthetic_source(parsed, *, image_size, batch_size, seed, shuffle):
    num_images = parsed.num_images
    check_batch_size(num_images, batch_size, f"source {parsed.spec!r}")
    images = tf.constant(
        synthetic.make_synthetic_arrays(
            num_images=num_images, image_size=image_size, seed=seed or 0
        )["image"]
    )
    dataset = tf.data.Dataset.from_tensor_slices(images).map(
        lambda image: tf.cast(image, tf.float32)
    )
    if shuffle:
        dataset = dataset.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def stream(start_batch):
        return epoch_stream.epoch_stream(
            images,
            lambda image: tf.cast(image, tf.float32),
            num_items=num_images,
            batch_size=batch_size,
            seed=seed or 0,
            start_batch=start_batch,
            shuffle=shuffle,
        )

    return _unscanned_source(
        dataset, num_images, batch_size, f"synthetic shapes: {num_images} images", stream
    )


_LOADERS = {
    "synthetic": _synthetic_source,
    "tfds": _tfds_source,
    "voc": _voc_source,
    "folder": _folder_source,
}


def load_image_source(spec, *, image_size, batch_size, seed=0, shuffle=True):
    """Opens an image source for pretraining.

    Folder and VOC sources are scanned once for undecodable files, which are left out and
    reported in `skipped` / `skipped_files` (see `skipped_report`).

    Args:
        spec: str or `SourceSpec`, see `parse_source`.
        image_size: int, height and width of every image.
        batch_size: int, images per batch; the last short batch is dropped.
        seed: int or None, shuffle seed (and synthetic sequence). Defaults to 0.
        shuffle: bool, whether to shuffle, with a new order each pass. Defaults to True.

    Returns:
        An `ImageSource`.

    Raises:
        SourceError: unknown scheme, missing path, no usable images, fewer images than one
            batch, or a TFDS dataset that is not prepared while offline.

    Example:

    >>> source = load_image_source("synthetic:256", image_size=64, batch_size=32)
    >>> source.steps_per_epoch
    8
    """
    parsed = spec if isinstance(spec, SourceSpec) else parse_source(spec)
    if image_size <= 0:
        raise SourceError(f"image_size must be > 0. Received: image_size={image_size}")
    return _LOADERS[parsed.kind](
        parsed, image_size=image_size, batch_size=batch_size, seed=seed, shuffle=shuffle
    )
