"""Pascal VOC source: annotations, a VOCdevkit folder, and TFDS `voc`, all as TFDS features.

A local VOCdevkit year folder (`voc:PATH`) and a prepared TFDS `voc/2007` or `voc/2012` give
elements of the same structure, so the code downstream (see `localization.py`) has one path:

```
{"image": uint8 [H, W, 3], "image/filename": string "000005.jpg",
 "objects": {"bbox": float32 [K, 4], "label": int64 [K], "pose": int64 [K],
             "is_difficult": bool [K], "is_truncated": bool [K]},
 "labels": int64 [L], "labels_no_difficult": int64 [L']}
```

Boxes follow the TFDS `voc` builder exactly (tensorflow-datasets 4.9):
`(ymin / height, xmin / width, ymax / height, xmax / width)` on the XML's 1-based inclusive
pixel coordinates, with no `- 1`. A box therefore spans `(ymax - ymin) * height` pixels in
normalized units, one less than VOC's `ymax - ymin + 1`; `localization.select_target_tf`
adds the 1 back so both sources pick the same target.
"""

import collections
import os
import typing
import xml.etree.ElementTree as ElementTree

import numpy as np
import tensorflow as tf

from ssl_keras.data import image_folder
from ssl_keras.data import sources
from ssl_keras.data.sources import SourceError

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
"""The 20 VOC class names in TFDS order; `label` indexes into this tuple."""

VOC_POSES = ("frontal", "rear", "left", "right", "unspecified")
"""The VOC pose names in TFDS order; `pose` in TFDS-style features indexes into this tuple."""

# Reasons `load_voc_records` counts, besides image_folder's decodability reasons.
NO_IMAGE = "annotation without image"
NO_ANNOTATION = "image without annotation"
NO_FILES = "neither image nor annotation"

_CLASS_INDEX = {name: index for index, name in enumerate(VOC_CLASSES)}
_POSE_INDEX = {name: index for index, name in enumerate(VOC_POSES)}
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
_TFDS_VOC_NAMES = ("voc/2007", "voc/2012")


class VOCAnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem."""


class VOCRecords(typing.NamedTuple):
    """What `load_voc_records` found; unpacks as `records, skipped`."""

    records: list
    skipped: dict


# The checks, one function per category, so a later change can turn any of them into a
# counted skip in one place.


def _check_xml(xml_path):
    """Parses the file; malformed XML raises."""
    name = os.path.basename(xml_path)
    try:
        return ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise VOCAnnotationError(
            f"annotation {name}: malformed XML ({error}); fix or remove {xml_path}"
        ) from error
    except OSError as error:
        raise VOCAnnotationError(
            f"annotation {name}: cannot read {xml_path} ({error.strerror or error})"
        ) from error


def _check_size(root, name):
    """Returns `(width, height)` as positive ints; a missing or bad `<size>` raises."""
    size = root.find("size")
    values = {}
    for key in ("width", "height"):
        node = size.find(key) if size is not None else None
        text = (node.text or "").strip() if node is not None else ""
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or value <= 0 or value != int(value):
            raise VOCAnnotationError(
                f"annotation {name}: missing or invalid <size><{key}> ({text!r}); "
                "every VOC annotation needs the image width and height in pixels"
            )
        values[key] = int(value)
    return values["width"], values["height"]


def _check_label(obj, name, number):
    """Returns the class index; a missing or unknown `<name>` raises."""
    node = obj.find("name")
    text = (node.text or "").strip().lower() if node is not None else ""
    if text not in _CLASS_INDEX:
        raise VOCAnnotationError(
            f"annotation {name}: box {number} has unknown class {text!r}; "
            f"expected one of {', '.join(VOC_CLASSES)}"
        )
    return _CLASS_INDEX[text]


def _check_box(obj, name, number, width, height):
    """Returns `(xmin, ymin, xmax, ymax)` as floats; a missing, inverted or outside box raises."""
    bndbox = obj.find("bndbox")
    coords = {}
    for key in _BOX_KEYS:
        node = bndbox.find(key) if bndbox is not None else None
        text = (node.text or "").strip() if node is not None else ""
        try:
            coords[key] = float(text)
        except ValueError:
            raise VOCAnnotationError(
                f"annotation {name}: box {number} has a missing or non-numeric "
                f"<bndbox><{key}> ({text!r})"
            ) from None
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if coords[low] > coords[high]:
            raise VOCAnnotationError(
                f"annotation {name}: box {number} has {low} > {high} "
                f"({coords[low]:g} > {coords[high]:g})"
            )
    if (
        min(coords.values()) < 0
        or coords["xmax"] > width
        or coords["ymax"] > height
    ):
        described = ", ".join(f"{key}={coords[key]:g}" for key in _BOX_KEYS)
        raise VOCAnnotationError(
            f"annotation {name}: box {number} ({described}) lies outside the "
            f"{width}x{height} image"
        )
    return coords["xmin"], coords["ymin"], coords["xmax"], coords["ymax"]


def _flag(obj, key):
    """TFDS reads a flag as `text == "1"`; a missing flag reads as False."""
    node = obj.find(key)
    return node is not None and (node.text or "").strip() == "1"


def _pose(obj):
    node = obj.find("pose")
    text = (node.text or "").strip().lower() if node is not None else ""
    return text if text in _POSE_INDEX else "unspecified"


def parse_voc_annotation(xml_path):
    """Reads one VOC annotation file into the TFDS `voc` builder's features.

    Only direct `<object>` children count; person-layout `<part>` boxes are ignored, as in
    TFDS.

    Args:
        xml_path: str or path-like, the `Annotations/<id>.xml` file.

    Returns:
        A dict: `"image_id"` (str, the file name without `.xml`), `"image/filename"`
        (`"<id>.jpg"`, as TFDS), `"width"`, `"height"` (int pixels), and `"objects"`, a list
        in file order of dicts with `"bbox"` (tuple of 4 floats, normalized `(ymin, xmin,
        ymax, xmax)` computed as TFDS does, see the module docstring), `"label"` (int index
        in `VOC_CLASSES`), `"is_difficult"`, `"is_truncated"` (bool), `"pose"` (str in
        `VOC_POSES`, unknown poses read as `"unspecified"`) and `"area_pixels"` (float, VOC's
        `(xmax - xmin + 1) * (ymax - ymin + 1)` on the original coordinates).

    Raises:
        VOCAnnotationError: malformed XML, missing or invalid `<size>`, unknown class, or a
            missing, inverted or out-of-image box. Boxes are numbered from 1 in file order.

    Example:

    >>> record = parse_voc_annotation("VOC2007/Annotations/000005.xml")
    >>> record["objects"][0]["bbox"]  # chair (xmin, ymin, xmax, ymax) = (263, 211, 324, 339)
    (0.5626666666666666, 0.526, 0.904, 0.648)
    """
    xml_path = os.fspath(xml_path)
    name = os.path.basename(xml_path)
    root = _check_xml(xml_path)
    width, height = _check_size(root, name)
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        label = _check_label(obj, name, number)
        xmin, ymin, xmax, ymax = _check_box(obj, name, number, width, height)
        objects.append(
            {
                "bbox": (ymin / height, xmin / width, ymax / height, xmax / width),
                "label": label,
                "is_difficult": _flag(obj, "difficult"),
                "is_truncated": _flag(obj, "truncated"),
                "pose": _pose(obj),
                "area_pixels": (xmax - xmin + 1.0) * (ymax - ymin + 1.0),
            }
        )
    image_id = os.path.splitext(name)[0]
    return {
        "image_id": image_id,
        "image/filename": f"{image_id}.jpg",
        "width": width,
        "height": height,
        "objects": objects,
    }


def read_image_set(root, split):
    """Reads the ids of `ImageSets/Main/{split}.txt` in a VOCdevkit year folder.

    Args:
        root: str, the year folder (`.../VOC2007`).
        split: str, the image set, e.g. `"train"`, `"val"`, `"trainval"`, `"test"`.

    Returns:
        List of str ids, in file order, duplicates removed.

    Raises:
        SourceError: the folder or the list file does not exist; the message lists the
            splits that do.
    """
    root = os.fspath(root)
    sources._existing_folder(root, f"voc:{root}", "VOC folder")
    sets_dir = os.path.join(root, "ImageSets", "Main")
    list_file = os.path.join(sets_dir, f"{split}.txt")
    if not os.path.isfile(list_file):
        # Per-class lists (`cat_train.txt`) are not splits.
        available = sorted(
            name[:-4]
            for name in (os.listdir(sets_dir) if os.path.isdir(sets_dir) else [])
            if name.endswith(".txt") and "_" not in name
        )
        raise SourceError(
            f"VOC folder {root}: no image set {list_file}; available splits: "
            f"{', '.join(available) if available else 'none (ImageSets/Main is missing or empty)'}"
        )
    with open(list_file, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return list(dict.fromkeys(ids))


def load_voc_records(root, split):
    """Reads the annotations of one split of a VOCdevkit year folder.

    An id whose XML or JPEG is missing, or whose JPEG cannot be decoded (checked once with
    `image_folder.scan_images`), is left out and counted. Annotation errors raise.

    Args:
        root: str or path-like, the year folder (`.../VOCdevkit/VOC2007`).
        split: str, an image set in `ImageSets/Main/`, e.g. `"train"`.

    Returns:
        `VOCRecords(records, skipped)`: `records` is a list, in image-set order, of
        `parse_voc_annotation` dicts with `"image_path"` added; `skipped` is a dict
        reason -> count (`NO_IMAGE`, `NO_ANNOTATION`, `NO_FILES` or an image_folder reason
        such as `"truncated"`); it is empty when nothing was left out.

    Raises:
        SourceError: the folder or the image set does not exist.
        VOCAnnotationError: an annotation cannot be read (see `parse_voc_annotation`).

    Example:

    >>> records, skipped = load_voc_records("VOCdevkit/VOC2007", "val")
    """
    root = os.fspath(root)
    ids = read_image_set(root, split)
    skipped = collections.Counter()
    pairs = []
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        image_path = os.path.join(root, "JPEGImages", f"{image_id}.jpg")
        has_xml, has_image = os.path.isfile(xml_path), os.path.isfile(image_path)
        if has_xml and has_image:
            pairs.append((xml_path, image_path))
        else:
            skipped[NO_IMAGE if has_xml else NO_ANNOTATION if has_image else NO_FILES] += 1
    good_paths, scan_skipped, _ = image_folder.scan_images([p for _, p in pairs])
    skipped.update(scan_skipped)
    good = set(good_paths)
    records = []
    for xml_path, image_path in pairs:
        if image_path in good:
            records.append({**parse_voc_annotation(xml_path), "image_path": image_path})
    return VOCRecords(records, dict(skipped))


def _read_image(path):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def voc_feature_table(records):
    """The annotations of `load_voc_records` records packed as tensors, and their decoder.

    Args:
        records: non-empty list of record dicts, each with `"image_path"`.

    Returns:
        `(table, decode)`: `table` is a dict of (ragged) tensors with one row per record;
        `decode(row)` reads the row's image and returns TFDS `voc` features (see the module
        docstring). Safe to use inside tf.data.
    """
    if not records:
        raise ValueError("`records` must hold at least one record. Received: records=[]")
    counts = [len(record["objects"]) for record in records]
    objects = [obj for record in records for obj in record["objects"]]

    def ragged(values, dtype, inner=()):
        values = np.asarray(values, dtype=dtype).reshape((len(objects),) + inner)
        return tf.RaggedTensor.from_row_lengths(values, np.asarray(counts, dtype=np.int64))

    def label_sets(keep):
        sets = [
            sorted({obj["label"] for obj in record["objects"] if keep(obj)})
            for record in records
        ]
        flat = np.asarray([label for labels in sets for label in labels], dtype=np.int64)
        lengths = np.asarray([len(labels) for labels in sets], dtype=np.int64)
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    table = {
        "path": tf.constant([os.fspath(record["image_path"]) for record in records]),
        "image/filename": tf.constant([record["image/filename"] for record in records]),
        "objects": {
            "bbox": ragged([obj["bbox"] for obj in objects], np.float32, (4,)),
            "label": ragged([obj["label"] for obj in objects], np.int64),
            "pose": ragged([_POSE_INDEX[obj["pose"]] for obj in objects], np.int64),
            "is_difficult": ragged([obj["is_difficult"] for obj in objects], bool),
            "is_truncated": ragged([obj["is_truncated"] for obj in objects], bool),
        },
        "labels": label_sets(lambda obj: True),
        "labels_no_difficult": label_sets(lambda obj: not obj["is_difficult"]),
    }

    def decode(element):
        element = dict(element)
        # Row slices of a ragged tensor arrive as ragged specs; TFDS gives dense tensors.
        dense = lambda x: x.to_tensor() if isinstance(x, tf.RaggedTensor) else x  # noqa: E731
        element["objects"] = {key: dense(v) for key, v in element["objects"].items()}
        element["objects"]["bbox"] = tf.reshape(element["objects"]["bbox"], (-1, 4))
        for key in ("labels", "labels_no_difficult"):
            element[key] = dense(element[key])
        element["image"] = _read_image(element.pop("path"))
        return element

    return table, decode


def voc_feature_dataset(records, *, shuffle=False, seed=None):
    """A tf.data dataset of `load_voc_records` records as TFDS `voc` features.

    Annotations are packed into tensors up front (`voc_feature_table`); images are read and
    decoded in a parallel map, after the optional shuffle, so shuffling holds file names, not
    pixels.

    Args:
        records: non-empty list of record dicts, each with `"image_path"`.
        shuffle: bool, whether to shuffle, with a new order each iteration. Defaults to
            False (record order).
        seed: int or None, the shuffle seed. Defaults to None.

    Returns:
        A `tf.data.Dataset` of dicts with the structure of `tfds.load("voc/2007")` elements
        (see the module docstring); `pose` indexes `VOC_POSES`.

    Example:

    >>> records, _ = load_voc_records("VOCdevkit/VOC2007", "val")
    >>> element = next(iter(voc_feature_dataset(records)))
    >>> element["objects"]["bbox"].shape  # [K, 4]
    """
    table, decode = voc_feature_table(records)
    dataset = tf.data.Dataset.from_tensor_slices(table)
    if shuffle:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    return dataset.map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle or seed is not None
    )


def tfds_voc_builder(name="voc/2007", *, data_dir=None):
    """The TFDS `voc` builder, prepared or failing fast with the alternatives.

    TFDS builds `voc` from the two VOC tar files (about 0.9 GB for 2007). Without network,
    it can be built from local copies with the tar files' original names in a manual dir::

        # VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar in ~/voc_tars
        tfds build voc/2007 --manual_dir=~/voc_tars

    (2012: `VOCtrainval_11-May-2012.tar`, `VOC2012test.tar`). A VOCdevkit year folder can
    also be used directly with the `voc:PATH` spec, without TFDS.

    Args:
        name: str, `"voc/2007"` or `"voc/2012"`, optionally with a version. Defaults to
            `"voc/2007"`.
        data_dir: str or None, the TFDS data dir. Defaults to env `TFDS_DATA_DIR`, then
            TFDS's default (`~/tensorflow_datasets`).

    Returns:
        A prepared `tfds.core.DatasetBuilder`.

    Raises:
        SourceError: the name is not a TFDS `voc` config, or the dataset is not prepared and
            the download host cannot be reached (answered within a few seconds).
    """
    if not name.startswith(_TFDS_VOC_NAMES):
        raise SourceError(
            f"TFDS dataset {name!r} is not Pascal VOC; use one of {', '.join(_TFDS_VOC_NAMES)}"
        )
    builder = sources.tfds_builder(
        name,
        context=f"TFDS {name}",
        unknown_hint=f"use {' or '.join(_TFDS_VOC_NAMES)}, or voc:PATH with a VOCdevkit year folder",
        offline_hint=(
            "use voc:PATH with a local VOCdevkit year folder (e.g. voc:VOCdevkit/VOC2007), or "
            f"build it from the VOC tar files with `tfds build {name} --manual_dir=DIR_WITH_TARS` "
            "(set TFDS_DATA_DIR if the data dir is elsewhere)"
        ),
        data_dir=data_dir,
    )
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder


def load_tfds_voc(
    name="voc/2007",
    split="train",
    *,
    data_dir=None,
    shuffle=False,
    seed=None,
    decode_images=True,
):
    """Loads a split of TFDS `voc`, failing fast when it is not available offline.

    See `tfds_voc_builder` for how to prepare the dataset without network.

    Args:
        name: str, `"voc/2007"` or `"voc/2012"`. Defaults to `"voc/2007"`.
        split: str, a TFDS split (`"train"`, `"validation"`, `"test"`, or a slice such as
            `"train[:90%]"`). Defaults to `"train"`.
        data_dir: str or None, the TFDS data dir. Defaults to env `TFDS_DATA_DIR`.
        shuffle: bool, whether to shuffle the files. Defaults to False.
        seed: int or None, the file-shuffle seed. Defaults to None.
        decode_images: bool, whether to decode `"image"`; False leaves the encoded bytes
            (cheap to shuffle, decode later). Defaults to True.

    Returns:
        A `tf.data.Dataset` of TFDS `voc` features (see the module docstring).

    Raises:
        SourceError: see `tfds_voc_builder`, or the split cannot be loaded.

    Example:

    >>> dataset = load_tfds_voc("voc/2007", "validation")
    """
    import tensorflow_datasets as tfds

    builder = tfds_voc_builder(name, data_dir=data_dir)
    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    try:
        return builder.as_dataset(
            split=split,
            shuffle_files=shuffle,
            decoders=decoders,
            read_config=tfds.ReadConfig(shuffle_seed=seed),
        )
    except Exception as error:  # noqa: BLE001 - split errors vary.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SourceError(
            f"TFDS could not load split {split!r} of {name!r} "
            f"({type(error).__name__}: {first_line}); splits: "
            f"{', '.join(builder.info.splits)}"
        ) from error
