"""Builders of the bad-input matrix, made at test time (no binary junk is committed).

Every builder writes one file into a folder and returns its path. `write_image_matrix` writes
the whole image matrix and says, for each file, whether it must be read (and which repair is
reported) or skipped (and for what reason class).
"""

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

HUGE_SIZE = (12000, 9000)
"""(width, height) of the very large image: 108 megapixels, above Pillow's bomb warning."""


def _pattern(height, width, channels=3, seed=0):
    """A smooth, seeded colour pattern (compresses well, but is not flat)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    phase = rng.uniform(0, 2 * np.pi, size=(1, 1, channels))
    return (127.5 + 120 * np.sin(6 * x + 4 * y + phase)).astype("uint8")


def _pattern_image(seed, size=(64, 48)):
    """`_pattern` of `size` (width, height) as an RGB PIL image."""
    return Image.fromarray(_pattern(size[1], size[0], seed=seed))


def _saved(folder, name, image, **options):
    """Saves the PIL `image` as `folder/name`, `options` going to `Image.save`; returns the path."""
    path = os.path.join(folder, name)
    image.save(path, **options)
    return path


def _written(folder, name, data):
    """Writes the bytes `data` as `folder/name`; returns the path."""
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _encoded(image, **options):
    """The bytes of the PIL `image` saved with `options` (`format` among them)."""
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


def good_jpeg(folder, name="good.jpg", size=(64, 48), seed=0):
    return _saved(folder, name, _pattern_image(seed, size), quality=90)


def zero_byte(folder, name="zero.jpg"):
    return _written(folder, name, b"")


def truncated_jpeg(folder, name="truncated.jpg"):
    data = _encoded(_pattern_image(1, (128, 96)), format="JPEG", quality=95)
    return _written(folder, name, data[: len(data) // 2])


def png_named_jpg(folder, name="actually_png.jpg"):
    return _saved(folder, name, _pattern_image(2, (56, 40)), format="PNG")


def cmyk_jpeg(folder, name="cmyk.jpg"):
    return _saved(folder, name, _pattern_image(3).convert("CMYK"), format="JPEG", quality=95)


def grayscale_jpeg(folder, name="gray.jpg"):
    gray = Image.fromarray(_pattern(48, 64, channels=1, seed=4)[..., 0], mode="L")
    return _saved(folder, name, gray, quality=95)


def png16(folder, name="sixteen_bit.png"):
    values = (_pattern(48, 64, channels=1, seed=5)[..., 0].astype("uint16") * 257).astype("uint16")
    return _saved(folder, name, Image.fromarray(values))  # mode I;16


def rgba_png(folder, name="rgba.png"):
    rgba = np.concatenate([_pattern(48, 64, seed=6), np.full((48, 64, 1), 128, "uint8")], axis=-1)
    return _saved(folder, name, Image.fromarray(rgba, mode="RGBA"))


def huge_jpeg(folder, name="huge.jpg", size=HUGE_SIZE):
    """A 12000x9000 JPEG, written without holding a float image (about 330 MB of uint8)."""
    width, height = size
    row = _pattern(1, width, seed=7)
    image = np.broadcast_to(row, (height, width, 3))
    return _saved(folder, name, Image.fromarray(np.ascontiguousarray(image)), quality=75)


def non_ascii_name(folder, name="café_日本語_фото.jpg"):
    return good_jpeg(folder, name=name, seed=8)


READ = "read"
SKIP = "skip"

# name -> (builder, outcome). Outcomes: READ (decoded, maybe with a reported repair) or SKIP.
IMAGE_MATRIX = {
    "zero_byte": (zero_byte, SKIP),
    "truncated_jpeg": (truncated_jpeg, SKIP),
    "png_named_jpg": (png_named_jpg, READ),
    "cmyk_jpeg": (cmyk_jpeg, READ),
    "grayscale": (grayscale_jpeg, READ),
    "png16": (png16, READ),
    "rgba_png": (rgba_png, READ),
    "non_ascii_name": (non_ascii_name, READ),
}
"""The image cases except the huge one (slow to write: see `huge_jpeg`)."""


def write_image_matrix(folder, *, include_huge=False):
    """Writes every image case into `folder`; returns {case: (path, outcome)}."""
    os.makedirs(folder, exist_ok=True)
    written = {
        case: (builder(folder), outcome) for case, (builder, outcome) in IMAGE_MATRIX.items()
    }
    if include_huge:
        written["huge"] = (huge_jpeg(folder), READ)
    return written


# Builders beyond the matrix: variants that only some decoders get right.


def _png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _rgb_png_bytes(width, height, idat, *, bit_depth=8):
    """The bytes of an RGB PNG of `width` x `height` at `bit_depth` whose one IDAT chunk is
    `idat` (compressed scanlines, or anything else), with valid chunk CRCs."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png16_rgb(folder, name="sixteen_bit_rgb.png", size=(64, 48)):
    """A 16-bit RGB PNG (Pillow opens it as plain "RGB", so only the header tells)."""
    width, height = size
    values = _pattern(height, width, seed=9).astype(">u2") * 257 + 128
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(height))
    return _written(folder, name, _rgb_png_bytes(width, height, zlib.compress(raw), bit_depth=16))


def bomb_png(folder, name="bomb.png", size=(20000, 10000)):
    """A small PNG whose header claims 200 megapixels: Pillow refuses it as a bomb."""
    return _written(folder, name, _rgb_png_bytes(*size, zlib.compress(b"\x00" * 64)))


def palette_png(folder, name="palette.png"):
    return _saved(folder, name, _pattern_image(10).convert("P"))


def palette_bmp(folder, name="palette.bmp"):
    """An 8-bit colour-palette BMP: TensorFlow would read its indices as gray levels."""
    return _saved(folder, name, _pattern_image(11).convert("P"))


def one_bit_bmp(folder, name="one_bit.bmp"):
    """A 1-bit BMP: TensorFlow cannot decode it."""
    return _saved(folder, name, _pattern_image(12).convert("1"))


def rgb_bmp(folder, name="rgb.bmp"):
    return _saved(folder, name, _pattern_image(13))


# Files whose headers are sound (Pillow's `verify` and the end-marker checks pass) but whose
# pixel data TensorFlow cannot decode.


def _jpeg_segments(data):
    """`[(offset, marker)]` of the JPEG marker segments before the entropy-coded data."""
    found, offset = [], 2
    while offset < len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        found.append((offset, marker))
        if marker == 0xDA:  # Start of scan: the coded data follow.
            break
        offset += 2 + int.from_bytes(data[offset + 2 : offset + 4], "big")
    return found


def undefined_quantization_jpeg(folder, name="undefined_qtable.jpg", size=(64, 48)):
    """A JPEG whose frame header points a component at quantization table 3, never defined."""
    data = bytearray(_encoded(_pattern_image(14, size), format="JPEG", quality=90))
    (sof,) = [offset for offset, marker in _jpeg_segments(data) if marker == 0xC0]
    data[sof + 2 + 2 + 6 + 2] = 3  # Length, precision, height, width, count; then id, sampling, Tq.
    return _written(folder, name, bytes(data))


def bad_zlib_png(folder, name="bad_zlib.png", size=(64, 48)):
    """A PNG whose IDAT holds garbage in place of deflate data, with valid chunk CRCs."""
    width, height = size
    raw = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(height)))
    garbage = raw[:2] + bytes(b ^ 0xA5 for b in raw[2:])  # The zlib header, then noise.
    return _written(folder, name, _rgb_png_bytes(width, height, garbage))


def exif_rotated_jpeg(folder, name="exif_rotated.jpg", size=(64, 48), orientation=6):
    """A JPEG stored `size` (width, height) whose EXIF tag tells viewers to rotate it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _saved(folder, name, _pattern_image(15, size), quality=90, exif=exif)
