"""Image-folder source: list, check once, then stream images through tf.data.

Bad files are found once, before training, by `scan_images` (header and end-of-file checks,
a few seconds for thousands of files), so the training pipeline does no Python work per
image. `ignore_errors()` stays in the pipeline only as a last-resort safety net.
"""

import collections
import concurrent.futures
import os
import typing

import tensorflow as tf
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File extensions `list_image_files` picks up (case-insensitive)."""

# Formats `tf.io.decode_image` decodes. PIL calls some camera JPEGs "MPO".
_DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF"})
_TAIL_BYTES = 1024
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GIF_MAGIC = b"GIF8"
_BMP_MAGIC = b"BM"

# The reasons `scan_images` reports, one per kind of bad file.
EMPTY = "empty file"
MISSING = "missing file"
UNREADABLE = "unreadable file"
NOT_AN_IMAGE = "not an image"
UNSUPPORTED = "unsupported format"
TRUNCATED = "truncated"
CORRUPT = "corrupt header"
TOO_LARGE = "too large to decode safely"


class ScanResult(typing.NamedTuple):
    """What `scan_images` found; unpacks as `good_paths, skipped, skipped_files`."""

    good_paths: list
    skipped: dict
    skipped_files: list


def list_image_files(root):
    """Lists the image files under a folder, recursively.

    Args:
        root: str or path-like, the folder to search.

    Returns:
        Sorted list of str paths whose extension is in `IMAGE_EXTENSIONS` (any case).
        Other files are ignored; the files are not opened.

    Raises:
        FileNotFoundError: `root` is not a folder.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(folder, name))
    return sorted(found)


def _truncation_reason(head, tail, size):
    """`TRUNCATED` when the file's last bytes are not its format's end marker, else None."""
    if head.startswith(_JPEG_MAGIC):
        # Entropy-coded JPEG data escapes every 0xFF, so FFD9 (end of image) cannot occur
        # by chance near the end of a cut file. Searching the tail, not only its last two
        # bytes, tolerates the padding some writers append after the marker.
        return None if b"\xff\xd9" in tail else TRUNCATED
    if head.startswith(_PNG_MAGIC):
        return None if b"IEND" in tail else TRUNCATED
    if head.startswith(_GIF_MAGIC):
        return None if tail.rstrip(b"\x00").endswith(b";") else TRUNCATED
    if head.startswith(_BMP_MAGIC) and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        return TRUNCATED if size < declared else None
    return None


def check_image_file(path):
    """Checks one file cheaply, without decoding its pixels.

    Args:
        path: str, the file to check.

    Returns:
        None when the file looks decodable, else the reason it is not (one of the module's
        reason constants, e.g. `"truncated"`).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return MISSING
    except OSError:
        return UNREADABLE
    if size == 0:
        return EMPTY
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(size - _TAIL_BYTES, 0))
            tail = f.read()
            f.seek(0)
            try:
                with Image.open(f) as image:
                    image_format = image.format
                    image.verify()
            except Image.DecompressionBombError:
                return TOO_LARGE
            except Image.UnidentifiedImageError:
                return NOT_AN_IMAGE
            except Exception:  # noqa: BLE001 - PIL raises many types for bad headers.
                return _truncation_reason(head, tail, size) or CORRUPT
    except OSError:
        return UNREADABLE
    if image_format not in _DECODABLE_FORMATS:
        return UNSUPPORTED
    return _truncation_reason(head, tail, size)


def scan_images(paths, *, num_workers=None):
    """Finds the files that cannot be decoded, once, before training.

    Each file is checked from its header (`PIL.Image.verify`) and its last bytes (JPEG must
    end with FFD9, PNG with IEND, ...), not decoded, so 8,500 small JPEGs take a few
    seconds on two cores. Order is kept.

    Args:
        paths: list of str, the files to check.
        num_workers: int, threads reading files in parallel. Defaults to
            `min(32, 4 * os.cpu_count())`: the work is mostly waiting on the disk.

    Returns:
        A `ScanResult` `(good_paths, skipped, skipped_files)`: the decodable paths, a dict
        reason -> count, and a list of `(path, reason)` for each skipped file.

    Example:

    >>> good, skipped, skipped_files = scan_images(list_image_files("photos/"))
    """
    paths = [os.fspath(path) for path in paths]
    if num_workers is None:
        num_workers = min(32, 4 * (os.cpu_count() or 1))
    if len(paths) < 64 or num_workers <= 1:
        reasons = [check_image_file(path) for path in paths]
    else:
        with concurrent.futures.ThreadPoolExecutor(max_workers=num_workers) as pool:
            reasons = list(pool.map(check_image_file, paths))
    good_paths = [path for path, reason in zip(paths, reasons) if reason is None]
    skipped_files = [(path, reason) for path, reason in zip(paths, reasons) if reason]
    skipped = dict(collections.Counter(reason for _, reason in skipped_files))
    return ScanResult(good_paths, skipped, skipped_files)


def read_image(path, *, image_size):
    """Reads, decodes and resizes one image inside a tf.data graph.

    Safe to use inside tf.data. The image is squashed (no crop) to a square: SimCLR's
    random crops come later, in the augmenter.

    Args:
        path: string scalar tensor, the file to read (JPEG, PNG, BMP or GIF).
        image_size: int, height and width of the output.

    Returns:
        float32 tensor `[image_size, image_size, 3]` in [0, 255]. Grayscale images are
        expanded to 3 channels and alpha is dropped.
    """
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.image.resize(
        image, (image_size, image_size), method="bilinear", antialias=True
    )
    image = tf.clip_by_value(image, 0.0, 255.0)
    image.set_shape((image_size, image_size, 3))
    return image


def image_dataset(
    paths,
    *,
    image_size,
    batch_size,
    shuffle=True,
    seed=0,
    repeat=False,
    drop_remainder=True,
):
    """A batched tf.data pipeline over image files.

    `paths -> shuffle -> [repeat] -> parallel read/decode/resize -> ignore_errors -> batch ->
    prefetch`. Run `scan_images` first: `ignore_errors()` silently drops files that still
    fail to decode, which would make epochs shorter than `len(paths)`.

    Args:
        paths: non-empty list of str, the image files.
        image_size: int, height and width of every image.
        batch_size: int, images per batch.
        shuffle: bool, whether to shuffle the files (a new order each epoch). Defaults to
            True.
        seed: int or None, shuffle seed; with a seed the order and the parallel map are
            deterministic. Defaults to 0.
        repeat: bool, whether to repeat forever. Defaults to False.
        drop_remainder: bool, whether to drop the last short batch. Defaults to True.

    Returns:
        A `tf.data.Dataset` of float32 batches `[batch_size, image_size, image_size, 3]` in
        [0, 255].

    Example:

    >>> paths, _, _ = scan_images(list_image_files("photos/"))
    >>> ds = image_dataset(paths, image_size=96, batch_size=64)
    """
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("`paths` must hold at least one image file. Received: paths=[]")
    if image_size <= 0 or batch_size <= 0:
        raise ValueError(
            "`image_size` and `batch_size` must be > 0. "
            f"Received: image_size={image_size}, batch_size={batch_size}"
        )
    dataset = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        # The file list is small (strings), so a full-size buffer gives a true shuffle.
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.map(
        lambda path: read_image(path, image_size=image_size),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=seed is not None,
    )
    dataset = dataset.ignore_errors()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
