"""Image-folder source: list, check once, then stream images through tf.data.

Bad files are found once, before training, by `scan_images` (header and end-of-file checks,
a few seconds for thousands of files), so the training pipeline does no Python work per
image. `ignore_errors()` stays in the pipeline only as a last-resort safety net.

The same scan reports the files that are read only after a conversion (grayscale, alpha,
16-bit, CMYK, palette, a PNG named `.jpg`, a very large JPEG decoded at reduced size), each
with one reason from a small fixed set, so that nothing is changed silently.
"""

import collections
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import os
import sys
import warnings

import tensorflow as tf
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
"""File extensions `list_image_files` picks up (case-insensitive)."""

# Formats `tf.io.decode_image` decodes. PIL calls some camera JPEGs "MPO".
_DECODABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "GIF"})
# The formats each extension promises; any other content is still decoded, by content.
_EXTENSION_FORMATS = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".bmp": {"BMP"},
}
_HEAD_BYTES = 34  # Enough for the PNG IHDR bit depth and the BMP bits-per-pixel/compression.
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
UNSUPPORTED_BMP = "unsupported BMP variant"
CORRUPT_DATA = "corrupt image data"  # The header looked right, decoding failed (`load_rgb`).

# The repairs `scan_images` reports for files that are read after a conversion. A file gets
# one reason, the first that applies in `REPAIRS` order.
REDUCED = "very large image, decoded at reduced size"
SIXTEEN_BIT = "16-bit scaled to 8-bit"
CMYK = "CMYK converted to RGB"
ALPHA = "alpha channel dropped"
PALETTE = "palette converted to RGB"
GRAYSCALE = "grayscale converted to RGB"
WRONG_EXTENSION = "extension does not match the content"
EXIF_IGNORED = "EXIF orientation ignored, stored pixels used"
REPAIRS = (REDUCED, SIXTEEN_BIT, CMYK, ALPHA, PALETTE, GRAYSCALE, WRONG_EXTENSION, EXIF_IGNORED)
"""Every repair reason, in the order of precedence."""

LARGE_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
"""Pixels above which a JPEG counts as very large: Pillow's decompression-bomb warning
threshold (89.5 MP, a quarter GiB of RGB). Such JPEGs are decoded at reduced size by
`read_image`; above twice this Pillow refuses the file (`TOO_LARGE`)."""

_JPEG_RATIOS = (2, 4, 8)  # The DCT scalings `tf.image.decode_jpeg` offers.
_GRAY_MODES = frozenset({"1", "L", "I", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """What `scan_images` found.

    For the call sites written when it had three fields it still unpacks as
    `good_paths, skipped, skipped_files`; new code reads the attributes.

    Attributes:
        good_paths: list of str, the decodable files, in the order given.
        skipped: dict, reason -> count of files left out.
        skipped_files: list of `(path, reason)`, the files left out.
        repaired: dict, repair reason -> count of files read after a conversion.
        repaired_files: list of `(path, reason)`, the files read after a conversion (all in
            `good_paths`).
    """

    good_paths: list
    skipped: dict
    skipped_files: list
    repaired: dict = dataclasses.field(default_factory=dict)
    repaired_files: list = dataclasses.field(default_factory=list)

    def __iter__(self):
        return iter((self.good_paths, self.skipped, self.skipped_files))


def jpeg_decode_ratio(height, width, image_size):
    """The DCT scaling `read_image` decodes a JPEG of this size with.

    Only very large JPEGs (over `LARGE_IMAGE_PIXELS`) are scaled, by the largest of 2, 4, 8
    that keeps the shorter side at least twice `image_size`, so the resize that follows
    still has detail to average. Decoding a 12000x9000 JPEG at 1/8 holds 5 MB instead of
    324 MB of pixels.

    Args:
        height: int, image height in pixels.
        width: int, image width in pixels.
        image_size: int, the side `read_image` resizes to.

    Returns:
        int, 1 (full size), 2, 4 or 8.
    """
    if height * width <= LARGE_IMAGE_PIXELS:
        return 1
    for ratio in reversed(_JPEG_RATIOS):
        if min(height, width) // ratio >= 2 * image_size:
            return ratio
    return 1


@contextlib.contextmanager
def _bomb_warnings_silenced():
    """Silences Pillow's DecompressionBombWarning for images this module accepts.

    Warning filters are process-wide, so this is entered once around a whole scan (its
    threads included), never inside the worker threads, where nested entries would race.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def path_tensor(paths):
    """File paths as a string tensor of their bytes, whatever their names' encoding.

    Python gives a file name that is not valid UTF-8 (a Latin-1 `caf\xe9.jpg`) as a str with
    surrogate escapes, which `tf.constant` refuses; `os.fsencode` gives back the name's own
    bytes, which `tf.io.read_file` opens.

    Args:
        paths: list of str, bytes or path-like.

    Returns:
        1-D `tf.string` tensor.
    """
    return tf.constant([os.fsencode(path) for path in paths], dtype=tf.string, shape=[len(paths)])


def walk_folders(root):
    """Walks a folder tree as `os.walk` does, following symlinked folders, each folder once.

    A symlinked sub-folder is searched like a real one (photo libraries often link in other
    drives). A folder already visited under another path (a link back up the tree, two links
    to one folder) is not entered again, so link loops end; real folders are entered before
    links, so they keep their own paths.

    Args:
        root: str or path-like, the folder to search.

    Yields:
        `(folder, file_names)`, folders in a fixed (sorted) order.
    """
    seen = {os.path.realpath(root)}
    for folder, dirs, names in os.walk(os.fspath(root), followlinks=True):
        kept = []
        for name in sorted(dirs, key=lambda d: (os.path.islink(os.path.join(folder, d)), d)):
            real = os.path.realpath(os.path.join(folder, name))
            if real not in seen:
                seen.add(real)
                kept.append(name)
        dirs[:] = kept
        yield folder, names


def list_image_files(root):
    """Lists the image files under a folder, recursively, following symlinked folders.

    Args:
        root: str or path-like, the folder to search.

    Returns:
        Sorted list of str paths whose extension is in `IMAGE_EXTENSIONS` (any case).
        Other files are ignored; the files are not opened. Folders are walked by
        `walk_folders` (symlinks followed, loops entered once).

    Raises:
        FileNotFoundError: `root` is not a folder.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    found = []
    for folder, names in walk_folders(root):
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(folder, name))
    return sorted(found)


def exif_orientation(image):
    """The EXIF orientation tag (1-8) of an open Pillow image, 1 when absent or unreadable.

    Only JPEGs are asked: their EXIF block is parsed on open, whereas Pillow loads a PNG's
    pixels to find its EXIF, after which `verify` refuses the file.
    """
    if image.format not in ("JPEG", "MPO"):
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is only metadata.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


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


def _bmp_supported(head, mode):
    """Whether TensorFlow's BMP decoder reads this BMP right.

    It decodes uncompressed 24- and 32-bit BMPs, and 8-bit ones as gray levels: an 8-bit
    palette of colours would come out as its indices, and 1-, 4- and 16-bit BMPs fail.
    """
    if len(head) < 30:
        return False
    header_size = int.from_bytes(head[14:18], "little")
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: no compression field.
        bits, compression = int.from_bytes(head[24:26], "little"), 0
    else:
        bits = int.from_bytes(head[28:30], "little")
        compression = int.from_bytes(head[30:34], "little") if len(head) >= 34 else 0
    if bits in (24, 32):
        return compression in (0, 3)  # BI_RGB, BI_BITFIELDS
    return bits == 8 and compression == 0 and mode == "L"


def _repair_reason(path, head, image_format, mode, info, size, image_size, orientation=1):
    """The first repair in `REPAIRS` order that decoding this file involves, or None.

    EXIF orientation policy, as TFDS and the VOC tools: images are decoded as stored
    (`tf.io.decode_image` ignores EXIF), in training, evaluation, predict and Grad-CAM alike,
    and boxes refer to the stored pixels. A file whose orientation tag is not 1 (a viewer
    would show it rotated or mirrored) is reported as `EXIF_IGNORED`.
    """
    width, height = size
    reasons = set()
    if orientation not in (None, 1):
        reasons.add(EXIF_IGNORED)
    if image_size is not None and image_format in ("JPEG", "MPO"):
        if jpeg_decode_ratio(height, width, image_size) > 1:
            reasons.add(REDUCED)
    if image_format == "PNG" and head.startswith(_PNG_MAGIC) and len(head) > 24 and head[24] == 16:
        reasons.add(SIXTEEN_BIT)  # Pillow shows 16-bit RGB(A) as plain "RGB(A)".
    if mode.startswith("I;16"):
        reasons.add(SIXTEEN_BIT)
    if mode == "CMYK":
        reasons.add(CMYK)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in info):
        reasons.add(ALPHA)
    elif mode == "P":
        reasons.add(PALETTE)
    if mode in _GRAY_MODES or mode.startswith("I;16") or mode in ("LA", "La"):
        reasons.add(GRAYSCALE)
    extension = os.path.splitext(path)[1].lower()
    if image_format not in _EXTENSION_FORMATS.get(extension, {image_format}):
        reasons.add(WRONG_EXTENSION)
    return next((reason for reason in REPAIRS if reason in reasons), None)


def _tf_decodes(path, head):
    """Whether TensorFlow's decoder reads the pixel data (headers can be sound and data not).

    JPEGs are decoded at 1/8 scale: the same markers, tables and entropy-coded data are read,
    for a fraction of the inverse-DCT and colour work.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
        if head.startswith(_JPEG_MAGIC):
            tf.image.decode_jpeg(data, channels=3, ratio=8)
        else:
            tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    except (OSError, tf.errors.OpError):
        return False
    return True


def _inspect(path, image_size, decode=True):
    """`(skip_reason, repair_reason)` of one file; see `inspect_image_file`."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return MISSING, None
    except OSError:
        return UNREADABLE, None
    if size == 0:
        return EMPTY, None
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
            f.seek(max(size - _TAIL_BYTES, 0))
            tail = f.read()
            f.seek(0)
            try:
                with Image.open(f) as image:
                    image_format, mode = image.format, image.mode
                    info, image_size_px = dict(image.info), image.size
                    orientation = exif_orientation(image)
                    image.verify()
            except Image.DecompressionBombError:
                return TOO_LARGE, None
            except Image.UnidentifiedImageError:
                return NOT_AN_IMAGE, None
            except Exception:  # noqa: BLE001 - PIL raises many types for bad headers.
                return _truncation_reason(head, tail, size) or CORRUPT, None
    except OSError:
        return UNREADABLE, None
    if image_format not in _DECODABLE_FORMATS:
        return UNSUPPORTED, None
    if image_format == "BMP" and not _bmp_supported(head, mode):
        return UNSUPPORTED_BMP, None
    truncated = _truncation_reason(head, tail, size)
    if truncated:
        return truncated, None
    if decode and not _tf_decodes(path, head):
        return CORRUPT_DATA, None
    return None, _repair_reason(
        path, head, image_format, mode, info, image_size_px, image_size, orientation
    )


def inspect_image_file(path, *, image_size=None):
    """Checks one file cheaply, without decoding its pixels, and names any conversion.

    Args:
        path: str, the file to check.
        image_size: int or None, the side `read_image` will resize to; when given, a very
            large JPEG that it decodes at reduced size is reported as `REDUCED`. Defaults to
            None (full-size decoding, as `decode_rgb` without `image_size`).

    Returns:
        `(skip_reason, repair_reason)`: `skip_reason` is None when the file looks
        decodable, else why it is not (e.g. `"truncated"`); `repair_reason` is None or the
        conversion decoding involves (one of `REPAIRS`, e.g. `"alpha channel dropped"`).

    Example:

    >>> inspect_image_file("photos/scan.png")
    (None, 'grayscale converted to RGB')
    """
    with _bomb_warnings_silenced():
        return _inspect(os.fspath(path), image_size)


def check_image_file(path):
    """Checks one file cheaply, without decoding its pixels.

    Args:
        path: str, the file to check.

    Returns:
        None when the file looks decodable, else the reason it is not (one of the module's
        reason constants, e.g. `"truncated"`).
    """
    return inspect_image_file(path)[0]


PROGRESS_MIN_FILES = 500
"""Scans of fewer files than this show no progress bar: they take about a second."""
_SCAN_PROGRESS = contextvars.ContextVar("scan_progress", default=False)


@contextlib.contextmanager
def scan_progress(enabled=True):
    """Within this block, `scan_images` shows a progress bar (for 500 files or more).

    The commands turn it on around their data loading unless `--quiet`, so that the scan of a
    large folder, which reads and decodes every file, does not look like a hang. Library calls
    outside such a block print nothing.

    Example:

    >>> with scan_progress():
    ...     source = load_image_source("photos/", image_size=96, batch_size=64)
    checking 8500 image files (header, end, one decode each)
    8500/8500 ━━━━━━━━━━━━━━━━━━━━ 6s 1ms/image
    """
    token = _SCAN_PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _SCAN_PROGRESS.reset(token)


def _scan_progress_bar(num_files):
    """A `keras.utils.Progbar` for the scan, or None (off, or a small scan)."""
    if not _SCAN_PROGRESS.get() or num_files < PROGRESS_MIN_FILES:
        return None
    import keras  # Only here: the scan itself needs no Keras.

    print(f"checking {num_files} image files (header, end, one decode each)", flush=True)
    # A log file gets one line at the end, a terminal a live bar.
    verbose = 1 if sys.stdout.isatty() else 2
    return keras.utils.Progbar(num_files, verbose=verbose, unit_name="image", interval=0.5)


def _checked_in_order(inspect, paths, num_workers):
    """`[inspect(path) for path in paths]`, on `num_workers` threads, with the progress bar."""
    progress = _scan_progress_bar(len(paths))
    if len(paths) < 64 or num_workers <= 1:
        results = map(inspect, paths)
        pool = None
    else:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=num_workers)
        results = pool.map(inspect, paths)
    checks = []
    try:
        for check in results:
            checks.append(check)
            if progress is not None and (len(checks) % 64 == 0 or len(checks) == len(paths)):
                progress.update(len(checks))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return checks


def scan_images(paths, *, image_size=None, num_workers=None, decode=True):
    """Finds the files that cannot be decoded, and those read after a conversion, once.

    Each file is checked from its header (`PIL.Image.verify`) and its last bytes (JPEG must
    end with FFD9, PNG with IEND, ...), then, with `decode`, decoded once by TensorFlow (JPEGs
    at 1/8 scale), so that a file whose headers are sound but whose data TensorFlow refuses
    (an undefined quantization table, bad PNG deflate data) is skipped here, as
    `CORRUPT_DATA`, rather than failing mid-run: the scan and the decoder agree. On the 865
    VOC2007 JPEGs that costs about 2.7 s on two loaded cores (0.2 s without). Order is kept.

    Args:
        paths: list of str, the files to check.
        image_size: int or None, the side `read_image` will resize to, so that very large
            JPEGs decoded at reduced size are reported (`REDUCED`). Defaults to None: the
            caller decodes at full size.
        num_workers: int, threads reading files in parallel. Defaults to
            `min(32, 4 * os.cpu_count())`: the work is mostly waiting on the disk.
        decode: bool, whether files are also decoded by TensorFlow. Defaults to True.

    Inside a `scan_progress()` block, a scan of 500 files or more shows a progress bar.

    Returns:
        A `ScanResult`: the decodable paths; the skipped files, as reason -> count and as
        `(path, reason)`; the files read after a conversion, likewise.

    Example:

    >>> scan = scan_images(list_image_files("photos/"), image_size=96)
    >>> scan.skipped, scan.repaired
    ({'truncated': 1}, {'grayscale converted to RGB': 12})
    """
    paths = [os.fspath(path) for path in paths]
    if num_workers is None:
        num_workers = min(32, 4 * (os.cpu_count() or 1))

    def inspect(path):
        return _inspect(path, image_size, decode)

    with _bomb_warnings_silenced():
        checks = _checked_in_order(inspect, paths, num_workers)
    good_paths = [path for path, (reason, _) in zip(paths, checks) if reason is None]
    skipped_files = [(path, reason) for path, (reason, _) in zip(paths, checks) if reason]
    repaired_files = [
        (path, repair) for path, (reason, repair) in zip(paths, checks) if reason is None and repair
    ]
    return ScanResult(
        good_paths=good_paths,
        skipped=dict(collections.Counter(reason for _, reason in skipped_files)),
        skipped_files=skipped_files,
        repaired=dict(collections.Counter(reason for _, reason in repaired_files)),
        repaired_files=repaired_files,
    )


def _jpeg_ratio_index(data, image_size):
    """`jpeg_decode_ratio` in the graph, from the JPEG header: 0 for 1, then 1, 2, 3."""
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    height, width = shape[0], shape[1]
    large = height * width > LARGE_IMAGE_PIXELS
    shorter = tf.minimum(height, width)
    index = tf.constant(0, tf.int32)
    for i, ratio in enumerate(_JPEG_RATIOS, start=1):  # Ascending: the largest that fits wins.
        fits = large & (shorter // ratio >= 2 * image_size)
        index = tf.where(fits, tf.constant(i, tf.int32), index)
    return index


def decode_rgb(data, *, image_size=None):
    """Decodes encoded image bytes to uint8 RGB, as training does. Safe inside tf.data.

    Conversions are those of `tf.io.decode_image(channels=3)`: grayscale is repeated to
    three channels, alpha is dropped (not composited), 16-bit values become `value >> 8`,
    CMYK and palettes become RGB, and the content decides the format, not the extension.

    Args:
        data: string scalar tensor, the encoded image (JPEG, PNG, BMP or GIF).
        image_size: int or None, the side the caller resizes to; when given, very large
            JPEGs are decoded at reduced size (see `jpeg_decode_ratio`). Defaults to None:
            full size.

    Returns:
        uint8 tensor `[H, W, 3]`.
    """

    def full():
        return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)

    if image_size is None:
        return full()

    def scaled(ratio):
        return lambda: tf.image.decode_jpeg(data, channels=3, ratio=ratio)

    def jpeg():
        index = _jpeg_ratio_index(data, image_size)
        return tf.switch_case(index, [full] + [scaled(ratio) for ratio in _JPEG_RATIOS])

    return tf.cond(tf.io.is_jpeg(data), jpeg, full)


def load_rgb(path, *, image_size=None):
    """Reads and decodes one image file eagerly, as training decodes it.

    For inference and tools outside tf.data: with the same `image_size` the pixels equal
    those `read_image` resizes. Run `inspect_image_file` first for the reason a bad file
    cannot be read.

    Args:
        path: str, the file to read.
        image_size: int or None, as in `decode_rgb`: when given, very large JPEGs are
            decoded at reduced size. Defaults to None: full size.

    Returns:
        uint8 numpy array `[H, W, 3]`.

    Raises:
        OSError: the file cannot be read.
        ValueError: its content cannot be decoded; the message names the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    try:
        return decode_rgb(tf.constant(data), image_size=image_size).numpy()
    except tf.errors.OpError as error:
        first_line = (error.message or "").strip().splitlines()[:1]
        raise ValueError(f"image {path}: {CORRUPT_DATA} ({''.join(first_line)})") from None


def read_image(path, *, image_size):
    """Reads, decodes and resizes one image inside a tf.data graph.

    Safe to use inside tf.data. The image is squashed (no crop) to a square: SimCLR's
    random crops come later, in the augmenter.

    Args:
        path: string scalar tensor, the file to read (JPEG, PNG, BMP or GIF).
        image_size: int, height and width of the output.

    Returns:
        float32 tensor `[image_size, image_size, 3]` in [0, 255]. Grayscale images are
        expanded to 3 channels and alpha is dropped; very large JPEGs are decoded at
        reduced size first (see `decode_rgb`).
    """
    data = tf.io.read_file(path)
    image = decode_rgb(data, image_size=image_size)
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
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

    >>> scan = scan_images(list_image_files("photos/"), image_size=96)
    >>> ds = image_dataset(scan.good_paths, image_size=96, batch_size=64)
    """
    paths = [os.fspath(path) for path in paths]
    if not paths:
        raise ValueError("`paths` must hold at least one image file. Received: paths=[]")
    if image_size <= 0 or batch_size <= 0:
        raise ValueError(
            "`image_size` and `batch_size` must be > 0. "
            f"Received: image_size={image_size}, batch_size={batch_size}"
        )
    dataset = tf.data.Dataset.from_tensor_slices(path_tensor(paths))
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
