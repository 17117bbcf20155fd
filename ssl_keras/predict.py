"""`predict_images`: draw a detect run's predicted box, class and score on image files."""

import os

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

from ssl_keras.box_drawing import draw_boxes
from ssl_keras.detect import load_run


class UnreadableImageError(ValueError):
    """An input image cannot be opened or decoded."""


def read_rgb(path):
    """Reads any Pillow-readable image as uint8 RGB [H, W, 3]; raises `UnreadableImageError`."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("RGB",):
                # Palette/alpha/16-bit/CMYK/grayscale images are converted, alpha on black.
                if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                    array = np.asarray(image, dtype="float32")
                    scale = 255.0 / max(float(array.max()), 1.0)
                    image = Image.fromarray((array * scale).astype("uint8"))
                image = image.convert("RGB")
            return np.asarray(image)
    except FileNotFoundError:
        raise UnreadableImageError(f"image {path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UnreadableImageError(f"image {path}: cannot be decoded ({error})") from None


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
            raise FileExistsError(f"--out {out}: {name} exists; choose a new --out (nothing was overwritten)")
        result.append(target)
    return result


def predict_images(run_dir, paths, out):
    """Predicts with a detect run on image files and writes annotated PNGs.

    Each image is resized exactly as in training (the run's `image_size` and `resize`
    policy); the predicted box is mapped back to the original image and drawn there with its
    class name and probability.

    Args:
        run_dir: a finished `ssl-keras detect` run directory.
        paths: image file paths (any format Pillow reads).
        out: output folder (created if needed; existing files are never overwritten).

    Returns:
        A list of dicts: image, output, class, score, box (normalised rel_yxyx, original frame).
    """
    from ssl_keras.data.localization import boxes_to_original, resize_example

    images = [read_rgb(p) for p in paths]  # all inputs are checked before any work is done
    model, record = load_run(run_dir)
    options, class_names = record["options"], record["resolved"]["class_names"]
    targets = _output_paths(paths, out)
    os.makedirs(out, exist_ok=True)
    rows = []
    for path, image, target in zip(paths, images, targets):
        resized, _ = resize_example(image, np.zeros(4, "float32"), image_size=options["image_size"],
                                    resize=options["resize"])
        batch = np.asarray(resized)[None]
        prediction = model(batch, training=False)
        probs = keras.ops.convert_to_numpy(keras.ops.softmax(prediction["class_logits"], axis=-1))[0]
        box = keras.ops.convert_to_numpy(prediction["boxes"])[0]
        box = np.asarray(boxes_to_original(box[None], image.shape[:2], options["image_size"], options["resize"]))[0]
        label = int(np.argmax(probs))
        drawn = draw_boxes(image, box[None], captions=[f"{class_names[label]} {probs[label]:.2f}"])
        tmp = target + ".partial.png"
        Image.fromarray(drawn).save(tmp)
        os.replace(tmp, target)
        rows.append({"image": path, "output": target, "class": class_names[label], "score": float(probs[label]),
                     "box": [round(float(v), 4) for v in box]})
    return rows
