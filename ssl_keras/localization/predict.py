"""`predict_images`: draw a detect run's predicted box, class and score on image files.

Inputs are read as training reads them (`image_files.decode_rgb`: grayscale to RGB, alpha
dropped, 16-bit as `value >> 8`, CMYK and palettes to RGB). An input that cannot be read is
skipped, printed with its reason and counted in `predictions.json`; the run stops, before
the model is loaded, only when no input is usable.
"""

import collections
import os

import keras
import numpy as np

from ssl_keras.localization.box_drawing import draw_boxes
from ssl_keras.data import image_files
from ssl_keras.localization.detect import load_run
from ssl_keras.runs.run_directory import make_directory, save_png_atomic, write_json_atomic

PREDICTIONS_FILE = "predictions.json"
"""The file `predict_images` writes in its output folder."""

NO_IMAGES_IN_FOLDER = "folder holds no image files"
"""The skip reason of a folder input without any `image_files.IMAGE_EXTENSIONS` file."""


class UnreadableImageError(ValueError):
    """An input image cannot be opened or decoded; the message names the file.

    Attributes:
        path: str or None, the file.
        reason: str or None, why (an `image_files` reason such as `"truncated"`).
    """

    def __init__(self, message, *, path=None, reason=None):
        super().__init__(message)
        self.path = path
        self.reason = reason


def _load(path, image_size=None):
    """`(rgb, repair_reason)` of one file; raises `UnreadableImageError`."""
    reason, repair = image_files.inspect_image_file(path, image_size=image_size)
    if reason is None:
        try:
            return image_files.load_rgb(path, image_size=image_size), repair
        except OSError:
            reason = image_files.UNREADABLE
        except ValueError:
            reason = image_files.CORRUPT_DATA
    raise UnreadableImageError(f"image {path}: {reason}", path=path, reason=reason)


def read_rgb(path):
    """Reads an image file as training decodes it, at full size.

    Args:
        path: str or path-like, a JPEG, PNG, BMP or GIF file (the content decides, not the
            extension).

    Returns:
        uint8 numpy array `[H, W, 3]`, equal to what the training pipeline decodes before
        resizing: grayscale repeated to 3 channels, alpha dropped (not composited), 16-bit
        values as `value >> 8`, CMYK and palette images converted to RGB.

    Raises:
        UnreadableImageError: the file is missing, empty, truncated, not an image, or in a
            format or variant that training cannot decode; the message names the file and
            the reason.
    """
    return _load(os.fspath(path))[0]


def expand_inputs(paths):
    """Expands folder inputs into their image files (recursively, sorted).

    Args:
        paths: list of str, files or folders.

    Returns:
        `(files, skipped_files)`: the files in input order, and `(folder, reason)` for each
        folder without any image file.
    """
    files, skipped_files = [], []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = image_files.list_image_files(path)
            files += found
            if not found:
                skipped_files.append((path, NO_IMAGES_IN_FOLDER))
        else:
            files.append(path)
    return files, skipped_files


def _output_paths(paths, out):
    taken, result = set(), []
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, n = f"{stem}_pred.png", 1
        while name in taken:
            n += 1
            name = f"{stem}_{n}_pred.png"
        taken.add(name)
        target = os.path.join(out, name)
        if os.path.exists(target):
            raise FileExistsError(
                f"--out {out}: {name} exists; choose a new --out (nothing was overwritten)"
            )
        result.append(target)
    return result


def _none_usable(skipped_files):
    listed = "; ".join(f"{path}: {reason}" for path, reason in skipped_files[:5])
    more = f"; ... and {len(skipped_files) - 5} more" if len(skipped_files) > 5 else ""
    return UnreadableImageError(
        f"no usable input image ({listed}{more}); give JPEG, PNG, BMP or GIF files that open "
        "in an image viewer (nothing was written)"
    )


def _predict_and_draw(model, image, target, *, image_size, resize, class_names):
    """Predicts on one decoded image, resized as in training, and writes it to `target` with its box drawn.

    Returns:
        The prediction row's `class`, `score` and `box` (normalised rel_yxyx in the original frame).
    """
    from ssl_keras.data.localization import boxes_to_original, resize_example

    resized, _ = resize_example(image, np.zeros(4, "float32"), image_size=image_size, resize=resize)
    batch = np.asarray(resized)[None]
    prediction = model(batch, training=False)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(prediction["class_logits"], axis=-1))[0]
    box = keras.ops.convert_to_numpy(prediction["boxes"])[0]
    box = np.asarray(boxes_to_original(box[None], image.shape[:2], image_size, resize))[0]
    label = int(np.argmax(probs))
    drawn = draw_boxes(image, box[None], captions=[f"{class_names[label]} {probs[label]:.2f}"])
    save_png_atomic(drawn, target)
    return {
        "class": class_names[label],
        "score": float(probs[label]),
        "box": [round(float(v), 4) for v in box],
    }


def predict_images(run_dir, paths, out, *, log=None, verbose=0):
    """Predicts with a detect run on image files and writes annotated PNGs.

    Each image is decoded and resized exactly as in training (the run's `image_size` and
    `resize` policy); the predicted box is mapped back to the original image and drawn there
    with its class name and probability. Inputs that cannot be read are skipped and counted;
    those read after a conversion (grayscale, alpha, 16-bit, ...) are reported once. A very
    large JPEG (over `image_files.LARGE_IMAGE_PIXELS`) is decoded, and drawn, at reduced
    size, so a 12000x9000 photo needs tens of MB instead of GBs. `OUT/predictions.json`
    holds the rows and both reports.

    Args:
        run_dir: a finished `ssl-keras detect` run directory.
        paths: image files or folders of images (searched recursively).
        out: output folder (created if needed; existing files are never overwritten).
        log: function taking one line of text, or None, for the skipped and converted
            inputs. Defaults to None (silent).
        verbose: int, 1 shows a progress bar over the images. Defaults to 0.

    Returns:
        The `predictions.json` content: a dict with `predictions` (one dict per drawn image:
        image, output, class, score, box as normalised rel_yxyx in the original frame),
        `num_images`, `skipped` (reason -> count), `skipped_files` and `repaired_files`
        (lists of `{"image", "reason"}`), `repaired` (reason -> count) and `model`.

    Raises:
        UnreadableImageError: no input is usable (raised before the model is loaded).
        FileExistsError: `OUT/predictions.json` or an output PNG already exists.
    """
    log = log or (lambda line: None)
    predictions_path = os.path.join(out, PREDICTIONS_FILE)
    if os.path.exists(predictions_path):
        raise FileExistsError(
            f"--out {out}: {PREDICTIONS_FILE} exists; choose a new --out (nothing was overwritten)"
        )
    usable, skipped_files = _usable_inputs(paths)
    targets = _output_paths(usable, out)  # refuses to overwrite before any work is done

    model, record = load_run(run_dir)
    options, class_names = record["options"], record["resolved"]["class_names"]
    image_size = options["image_size"]
    repairs = [
        (path, image_files.inspect_image_file(path, image_size=image_size)[1]) for path in usable
    ]
    repaired_files = [(path, repair) for path, repair in repairs if repair]
    for path, reason in skipped_files:
        log(f"image {path}: skipped, {reason}")
    for path, repair in repaired_files:
        log(f"image {path}: read, {repair}")
    make_directory(out)
    rows = []
    progress = keras.utils.Progbar(len(usable), unit_name="image") if verbose else None
    for path, target in zip(usable, targets):
        if progress is not None:
            progress.add(1)
        try:
            image, _ = _load(path, image_size)
        except UnreadableImageError as error:  # The header looked fine; the pixels do not.
            skipped_files.append((path, error.reason))
            log(f"image {path}: skipped, {error.reason}")
            continue
        rows.append(
            {
                "image": path,
                "output": target,
                **_predict_and_draw(
                    model,
                    image,
                    target,
                    image_size=image_size,
                    resize=options["resize"],
                    class_names=class_names,
                ),
            }
        )
    if not rows:
        raise _none_usable(skipped_files)
    result = _predictions_record(run_dir, rows, skipped_files, repaired_files)
    write_json_atomic(predictions_path, result)
    return result


def _usable_inputs(paths):
    """`(usable files, [(skipped file, reason)])` of `predict_images`'s inputs, from their headers.

    Raises:
        UnreadableImageError: no input is usable.
    """
    files, skipped_files = expand_inputs(paths)
    checks = [(path, image_files.check_image_file(path)) for path in files]
    usable = [path for path, reason in checks if reason is None]
    skipped_files += [(path, reason) for path, reason in checks if reason]
    if not usable:
        raise _none_usable(skipped_files)
    return usable, skipped_files


def _predictions_record(run_dir, rows, skipped_files, repaired_files):
    """`predictions.json`'s content (see `predict_images`)."""
    result = {
        "model": os.fspath(run_dir),
        "num_images": len(rows),
        "predictions": rows,
        "skipped": dict(collections.Counter(reason for _, reason in skipped_files)),
        "skipped_files": [{"image": path, "reason": reason} for path, reason in skipped_files],
        "repaired": dict(collections.Counter(reason for _, reason in repaired_files)),
        "repaired_files": [{"image": path, "reason": reason} for path, reason in repaired_files],
    }
    return result
