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


def good_jpeg(folder, name="good.jpg", size=(64, 48), seed=0):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(size[1], size[0], seed=seed)).save(path, quality=90)
    return path


def zero_byte(folder, name="zero.jpg"):
    path = os.path.join(folder, name)
    open(path, "wb").close()
    return path


def truncated_jpeg(folder, name="truncated.jpg"):
    buffer = io.BytesIO()
    Image.fromarray(_pattern(96, 128, seed=1)).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return path


def png_named_jpg(folder, name="actually_png.jpg"):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(40, 56, seed=2)).save(path, format="PNG")
    return path


def cmyk_jpeg(folder, name="cmyk.jpg"):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, seed=3)).convert("CMYK").save(path, format="JPEG", quality=95)
    return path


def grayscale_jpeg(folder, name="gray.jpg"):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, channels=1, seed=4)[..., 0], mode="L").save(path, quality=95)
    return path


def png16(folder, name="sixteen_bit.png"):
    path = os.path.join(folder, name)
    values = (_pattern(48, 64, channels=1, seed=5)[..., 0].astype("uint16") * 257).astype("uint16")
    Image.fromarray(values).save(path)  # mode I;16
    return path


def rgba_png(folder, name="rgba.png"):
    path = os.path.join(folder, name)
    rgba = np.concatenate([_pattern(48, 64, seed=6), np.full((48, 64, 1), 128, "uint8")], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(path)
    return path


def huge_jpeg(folder, name="huge.jpg", size=HUGE_SIZE):
    """A 12000x9000 JPEG, written without holding a float image (about 330 MB of uint8)."""
    path = os.path.join(folder, name)
    width, height = size
    row = _pattern(1, width, seed=7)
    image = np.broadcast_to(row, (height, width, 3))
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=75)
    return path


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


def png16_rgb(folder, name="sixteen_bit_rgb.png", size=(64, 48)):
    """A 16-bit RGB PNG (Pillow opens it as plain "RGB", so only the header tells)."""
    width, height = size
    values = _pattern(height, width, seed=9).astype(">u2") * 257 + 128
    raw = b"".join(b"\x00" + values[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # bit depth 16, RGB
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw))
            + _png_chunk(b"IEND", b"")
        )
    return path


def bomb_png(folder, name="bomb.png", size=(20000, 10000)):
    """A small PNG whose header claims 200 megapixels: Pillow refuses it as a bomb."""
    width, height = size
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b"")
        )
    return path


def palette_png(folder, name="palette.png"):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, seed=10)).convert("P").save(path)
    return path


def palette_bmp(folder, name="palette.bmp"):
    """An 8-bit colour-palette BMP: TensorFlow would read its indices as gray levels."""
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, seed=11)).convert("P").save(path)
    return path


def one_bit_bmp(folder, name="one_bit.bmp"):
    """A 1-bit BMP: TensorFlow cannot decode it."""
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, seed=12)).convert("1").save(path)
    return path


def rgb_bmp(folder, name="rgb.bmp"):
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(48, 64, seed=13)).save(path)
    return path


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
    buffer = io.BytesIO()
    Image.fromarray(_pattern(size[1], size[0], seed=14)).save(buffer, format="JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    (sof,) = [offset for offset, marker in _jpeg_segments(data) if marker == 0xC0]
    data[sof + 2 + 2 + 6 + 2] = 3  # Length, precision, height, width, count; then id, sampling, Tq.
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(bytes(data))
    return path


def bad_zlib_png(folder, name="bad_zlib.png", size=(64, 48)):
    """A PNG whose IDAT holds garbage in place of deflate data, with valid chunk CRCs."""
    width, height = size
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"".join(b"\x00" + bytes(3 * width) for _ in range(height)))
    garbage = raw[:2] + bytes(b ^ 0xA5 for b in raw[2:])  # The zlib header, then noise.
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", garbage)
            + _png_chunk(b"IEND", b"")
        )
    return path


def exif_rotated_jpeg(folder, name="exif_rotated.jpg", size=(64, 48), orientation=6):
    """A JPEG stored `size` (width, height) whose EXIF tag tells viewers to rotate it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = os.path.join(folder, name)
    Image.fromarray(_pattern(size[1], size[0], seed=15)).save(path, quality=90, exif=exif)
    return path
