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
import re
import socket
import typing

import tensorflow as tf

from ssl_keras.data import epoch_stream
from ssl_keras.data import image_files
from ssl_keras.data import synthetic

DEFAULT_SYNTHETIC_IMAGES = 512
DEFAULT_TFDS_SPLIT = "train"
SPEC_FORMS = "synthetic[:N], tfds:NAME[:SPLIT], voc:PATH[:SPLIT] or a folder path"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):")
# A TFDS version right after the name ("3.0.2", "3.*.*") belongs to the name, not the split.
_TFDS_SPEC = re.compile(r"^(?P<name>[^:]+(?::\d+(?:\.(?:\d+|\*)){0,2})?)(?::(?P<split>.+))?$")
_NETWORK_PROBE = ("storage.googleapis.com", 443)
_NETWORK_TIMEOUT_S = 3.0
_MAX_SHUFFLE_BUFFER = 10_000


class SourceError(ValueError):
    """A source spec that cannot be used; the message names the input and the fix."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec.

    Attributes:
        kind: str, one of `"synthetic"`, `"tfds"`, `"voc"`, `"folder"`.
        spec: str, the spec as given.
        path: str or None, the folder (voc, folder).
        name: str or None, the TFDS dataset name (tfds).
        split: str or None, the TFDS split or VOC image set.
        num_images: int or None, the synthetic set size.
    """

    kind: str
    spec: str
    path: str | None = None
    name: str | None = None
    split: str | None = None
    num_images: int | None = None


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


def parse_source(spec):
    """Parses a source spec string, without touching the disk or the network.

    Args:
        spec: str, one of `synthetic[:N]`, `tfds:NAME[:SPLIT]`, `voc:PATH[:SPLIT]` or a
            folder path.

    Returns:
        A `SourceSpec`.

    Raises:
        SourceError: the spec is empty, malformed, or uses an unknown scheme.

    Example:

    >>> parse_source("voc:data/VOC2007:train")
    SourceSpec(kind='voc', spec='voc:data/VOC2007:train', path='data/VOC2007', name=None, split='train', num_images=None)
    """
    spec = os.fspath(spec)
    text = spec.strip()
    if not text:
        raise SourceError(f"empty source spec; use {SPEC_FORMS}")
    if text == "synthetic" or text.startswith("synthetic:"):
        count = text[len("synthetic:") :] if ":" in text else ""
        if not count:
            return SourceSpec("synthetic", spec, num_images=DEFAULT_SYNTHETIC_IMAGES)
        if not count.isdigit() or int(count) <= 0:
            raise SourceError(
                f"source {spec!r}: N in synthetic:N must be a positive integer, "
                f"e.g. synthetic:1024. Received: N={count!r}"
            )
        return SourceSpec("synthetic", spec, num_images=int(count))
    if text.startswith("tfds:"):
        match = _TFDS_SPEC.match(text[len("tfds:") :])
        if not match or not match.group("name").strip():
            raise SourceError(
                f"source {spec!r}: expected tfds:NAME[:SPLIT], e.g. tfds:cifar10:train"
            )
        return SourceSpec(
            "tfds",
            spec,
            name=match.group("name"),
            split=match.group("split") or DEFAULT_TFDS_SPLIT,
        )
    if text.startswith("voc:"):
        rest = text[len("voc:") :]
        path, split = rest, None
        head, sep, last = rest.rpartition(":")
        # "voc:C:\\data\\VOC2007" keeps its drive letter: a split has no path separator and
        # never follows a one-letter head.
        if sep and len(head) > 1 and last and not re.search(r"[\\/]", last):
            path, split = head, last
        if not path:
            raise SourceError(
                f"source {spec!r}: expected voc:PATH[:SPLIT], e.g. voc:VOCdevkit/VOC2007:train"
            )
        return SourceSpec("voc", spec, path=path, split=split)
    scheme = _SCHEME.match(text)
    if scheme and not os.path.exists(text):
        raise SourceError(
            f"source {spec!r}: unknown scheme {scheme.group(1)!r} and no such folder; "
            f"use {SPEC_FORMS}"
        )
    return SourceSpec("folder", spec, path=text)


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


def check_batch_size(num_images, batch_size, what):
    if batch_size <= 0:
        raise SourceError(f"batch_size must be > 0. Received: batch_size={batch_size}")
    if num_images < batch_size:
        raise SourceError(
            f"{what} has {num_images} usable images, fewer than one batch of {batch_size}; "
            "lower the batch size or add images"
        )


def _existing_folder(path, spec, what):
    if not os.path.exists(path):
        raise SourceError(
            f"source {spec!r}: {what} {path} does not exist; check the path "
            f"(relative paths start at {os.getcwd()})"
        )
    if not os.path.isdir(path):
        raise SourceError(f"source {spec!r}: {path} is a file; give the folder that holds it")


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
        tf.constant(good_paths),
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
    _existing_folder(parsed.path, parsed.spec, "folder")
    paths = image_files.list_image_files(parsed.path)
    if not paths:
        extensions = ", ".join(image_files.IMAGE_EXTENSIONS)
        others = sum(len(names) for _, _, names in os.walk(parsed.path))
        found = f"only {others} other file{'s' if others != 1 else ''}" if others else "nothing"
        raise SourceError(
            f"source {parsed.spec!r}: folder {parsed.path} holds no image files ({extensions}; "
            f"searched recursively, found {found}); point --data at a folder of photos, "
            "or use synthetic"
        )
    return _files_source(
        paths, parsed.spec, description=f"image folder {parsed.path}", **kwargs
    )


def _voc_source(parsed, **kwargs):
    _existing_folder(parsed.path, parsed.spec, "VOC folder")
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
        from ssl_keras.data.voc import read_image_set  # voc imports this module

        ids = read_image_set(parsed.path, parsed.split)
        paths = [os.path.join(jpeg_dir, f"{image_id}.jpg") for image_id in ids]
        description = f"VOC {parsed.path} split {parsed.split}"
    if not paths:
        raise SourceError(
            f"source {parsed.spec!r}: no images listed in {parsed.path}; check the VOC folder"
        )
    return _files_source(paths, parsed.spec, description=description, **kwargs)


def _network_available():
    """Whether TFDS could reach its download host, answered within a few seconds."""
    try:
        with socket.create_connection(_NETWORK_PROBE, timeout=_NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def tfds_builder(name, *, context, unknown_hint, offline_hint, data_dir=None):
    """A TFDS builder that is prepared or can be downloaded, decided within a few seconds.

    Offline, TFDS retries downloads for minutes before failing; this checks first whether the
    dataset is already prepared and, if not, whether the download host answers at all.

    Args:
        name: str, TFDS dataset name (with optional config/version).
        context: str, what the error messages start with (the spec or the dataset).
        unknown_hint: str, the fix shown when TFDS does not know the name.
        offline_hint: str, the fix shown when the dataset is unprepared and offline.
        data_dir: str or None, TFDS data dir; None reads `TFDS_DATA_DIR` now (tfds itself
            reads it only once, at import).

    Returns:
        A `tfds.core.DatasetBuilder`, not necessarily prepared yet (but downloadable).

    Raises:
        SourceError: unknown name, or unprepared and the network is unreachable.
    """
    import tensorflow_datasets as tfds  # Slow import, and only TFDS sources need it.

    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # noqa: BLE001 - tfds raises several types for bad names.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SourceError(
            f"{context}: TFDS cannot build dataset {name!r} ({first_line}); {unknown_hint}"
        ) from error
    if not builder.is_prepared() and not _network_available():
        raise SourceError(
            f"{context}: TFDS dataset {name!r} is not prepared in {builder.data_dir} and "
            f"cannot be downloaded offline; {offline_hint}"
        )
    return builder


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
        image = tf.image.resize(
            image, (image_size, image_size), method="bilinear", antialias=True
        )
        return tf.clip_by_value(image, 0.0, 255.0)

    dataset = dataset.map(
        to_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None
    )
    if shuffle:
        buffer = min(num_images, _MAX_SHUFFLE_BUFFER)
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ImageSource(
        dataset=dataset,
        num_images=num_images,
        steps_per_epoch=num_images // batch_size,
        skipped={},
        skipped_files=[],
        description=f"TFDS {name} split {split}: {num_images} images",
    )


def _synthetic_source(parsed, *, image_size, batch_size, seed, shuffle):
    num_images = parsed.num_images
    check_batch_size(num_images, batch_size, f"source {parsed.spec!r}")
    images = tf.constant(
        synthetic.make_synthetic_arrays(num_images=num_images, image_size=image_size, seed=seed or 0)["image"]
    )
    dataset = tf.data.Dataset.from_tensor_slices(images).map(lambda image: tf.cast(image, tf.float32))
    if shuffle:
        dataset = dataset.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def stream(start_batch):
        return epoch_stream.epoch_stream(
            images, lambda image: tf.cast(image, tf.float32), num_items=num_images,
            batch_size=batch_size, seed=seed or 0, start_batch=start_batch, shuffle=shuffle,
        )

    return ImageSource(
        dataset=dataset,
        num_images=num_images,
        steps_per_epoch=num_images // batch_size,
        skipped={},
        skipped_files=[],
        description=f"synthetic shapes: {num_images} images",
        stream=stream,
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
