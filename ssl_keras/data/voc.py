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

Bad input in a VOCdevkit folder is read where it can be and left out where it cannot, never
silently (`load_voc_records`): each case has one reason key, counted in `skipped` (images
left out, boxes dropped) or `repaired` (images or boxes read after a fix), and each affected
file gets one message line, e.g.
`"annotation 000123.xml: box 3 has xmin > xmax (51 > 12), dropped"`.
"""

import collections
import dataclasses
import math
import os
import typing
import warnings
import xml.etree.ElementTree as ElementTree

import numpy as np
import tensorflow as tf
from PIL import Image

from ssl_keras.data import image_files
from ssl_keras.data.source_spec import SourceError, existing_folder
from ssl_keras.data.tfds_builder import tfds_builder

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

# Reasons `load_voc_records` counts in `skipped`, besides image_files's decodability reasons.
# Image-level: the image is left out.
NO_IMAGE = "annotation without image"
NO_ANNOTATION = "image without annotation"
NO_FILES = "neither image nor annotation"
MALFORMED = "malformed annotation"
NO_SIZE = "no image size"  # Only without `image_path`: `load_voc_records` always has one.
EXIF_FRAME = "annotation in the EXIF-rotated frame"  # See `_check_exif_frame`.
# Box-level: the box is dropped, the image is kept (its other boxes may still give a target).
ZERO_AREA = "zero-area box dropped"
BAD_COORDINATES = "box without numeric coordinates dropped"
OUTSIDE = "box outside image dropped"
UNKNOWN_CLASS = "box of unknown class dropped"
DROP_REASONS = (ZERO_AREA, BAD_COORDINATES, OUTSIDE, UNKNOWN_CLASS)
"""The `skipped` reasons that count boxes, not images."""

# Reasons `load_voc_records` counts in `repaired`, besides image_files's conversions.
SIZE_FROM_IMAGE = "size read from image"
SIZE_FIXED = "size fixed from image"
BOX_CLIPPED = "box clipped to image"  # Counts boxes.
OTHER_EXTENSION = "image found with another extension"
REPAIR_REASONS = (SIZE_FROM_IMAGE, SIZE_FIXED, BOX_CLIPPED, OTHER_EXTENSION)
"""The annotation repairs, in the order a file's message lists them."""

_CLASS_INDEX = {name: index for index, name in enumerate(VOC_CLASSES)}
_POSE_INDEX = {name: index for index, name in enumerate(VOC_POSES)}
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
_TFDS_VOC_NAMES = ("voc/2007", "voc/2012")


class VOCAnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file and the problem.

    Attributes:
        reason: str or None, the reason `load_voc_records` counts for the same problem (for
            example `MALFORMED`, or `ZERO_AREA` when `parse_voc_annotation(strict=True)`
            meets an inverted box).
    """

    def __init__(self, message, reason=None):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VOCRecords:
    """What `load_voc_records` found.

    For the call sites written when it had two fields it still unpacks as
    `records, skipped`; new code reads the attributes.

    Attributes:
        records: list of record dicts, in image-set order (see `load_voc_records`).
        skipped: dict reason -> count of what was left out: images (`NO_IMAGE`,
            `NO_ANNOTATION`, `NO_FILES`, `MALFORMED`, or an image_files reason such as
            `"truncated"`) and boxes (`DROP_REASONS`, whose names say "box").
        repaired: dict reason -> count of what was read after a fix: images
            (`SIZE_FROM_IMAGE`, `SIZE_FIXED`, `OTHER_EXTENSION`, or an image_files
            conversion such as `"CMYK converted to RGB"`) and boxes (`BOX_CLIPPED`).
        messages: list of str, one line per affected file naming it, the problem and what
            was done, in image-set order.
    """

    records: list
    skipped: dict
    repaired: dict = dataclasses.field(default_factory=dict)
    messages: list = dataclasses.field(default_factory=list)

    def __iter__(self):
        return iter((self.records, self.skipped))


class _Problem(typing.NamedTuple):
    """One problem in an annotation: its reason key, what is wrong, and what was done."""

    reason: str
    text: str
    action: str
    hint: str = ""  # Appended to the strict error only.


# The checks, one function per category; each returns a `_Problem` (or None), and
# `parse_voc_annotation` decides whether it raises (strict) or is repaired or counted.


def _check_xml(xml_path, name):
    """Parses the file; malformed or unreadable XML raises (there is nothing to repair)."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except ElementTree.ParseError as error:
        raise VOCAnnotationError(
            f"annotation {name}: malformed XML ({error})", MALFORMED
        ) from error
    except (OSError, UnicodeError) as error:
        detail = getattr(error, "strerror", None) or error
        raise VOCAnnotationError(
            f"annotation {name}: cannot be read ({detail})", MALFORMED
        ) from error
    if root.tag != "annotation":
        raise VOCAnnotationError(
            f"annotation {name}: the root element is <{root.tag}>, not <annotation>", MALFORMED
        )
    return root


def _xml_size(root):
    """`((width, height), None)` from `<size>`, or `(None, text)` when it is missing or invalid."""
    size = root.find("size")
    values = {}
    for key in ("width", "height"):
        node = size.find(key) if size is not None else None
        text = (node.text or "").strip() if node is not None else ""
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0 or value != int(value):
            return None, f"missing or invalid <size><{key}> ({text!r})"
        values[key] = int(value)
    return (values["width"], values["height"]), None


def _image_header(image_path):
    """`((width, height), EXIF orientation)` from the image file's header (no decode), or
    `(None, 1)` if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(image_path) as image:
                return tuple(image.size), image_files.exif_orientation(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None, 1


def _check_exif_frame(xml_size, image_size, orientation, name, image_name):
    """Raises when `<size>` is the EXIF-rotated frame of the image, not its stored frame.

    VOC boxes, like TFDS and the VOC tools, refer to the stored pixels, which is what every
    stage decodes (EXIF orientation is ignored; see `image_files.EXIF_IGNORED`). An
    annotation whose `<size>` is the stored size transposed, on an image whose orientation
    tag rotates it by 90 degrees (5 to 8), was drawn on the rotated view: its boxes would be
    wrong in the stored frame, so the image is left out (`EXIF_FRAME`) rather than its size
    being "fixed".
    """
    if orientation in (5, 6, 7, 8) and xml_size == image_size[::-1] and xml_size != image_size:
        raise VOCAnnotationError(
            f"annotation {name}: <size> {xml_size[0]}x{xml_size[1]} is the EXIF-rotated view "
            f"of {image_name} (stored {image_size[0]}x{image_size[1]}, orientation "
            f"{orientation}); VOC boxes refer to the stored pixels",
            EXIF_FRAME,
        )


def _check_size(root, name, image_path):
    """Returns `(width, height, problem)`: the size boxes are normalised by.

    The image's own size wins: a missing `<size>` is read from the image header, and one that
    disagrees with it is replaced (both reported). Without a readable image a missing `<size>`
    raises.
    """
    xml_size, text = _xml_size(root)
    image_size, orientation = _image_header(image_path) if image_path is not None else (None, 1)
    image_name = os.path.basename(image_path) if image_path is not None else None
    needs = "every VOC annotation needs the image width and height in pixels"
    if text is not None:
        if image_size is None:
            where = (
                "no image_path was given" if image_path is None else f"{image_name} cannot be read"
            )
            raise VOCAnnotationError(f"annotation {name}: {text} and {where}; {needs}", NO_SIZE)
        width, height = image_size
        return (
            width,
            height,
            _Problem(
                SIZE_FROM_IMAGE, text, f"size {width}x{height} read from {image_name}", f"; {needs}"
            ),
        )
    if image_size is not None and image_size != xml_size:
        _check_exif_frame(xml_size, image_size, orientation, name, image_name)
        width, height = image_size
        return (
            width,
            height,
            _Problem(
                SIZE_FIXED,
                f"<size> {xml_size[0]}x{xml_size[1]} disagrees with {image_name} ({width}x{height})",
                "boxes normalised by the image's size",
            ),
        )
    return xml_size[0], xml_size[1], None


def _check_label(obj, number):
    """Returns `(class index, None)`, or `(None, problem)` for a missing or unknown `<name>`."""
    node = obj.find("name")
    text = (node.text or "").strip().lower() if node is not None else ""
    if text not in _CLASS_INDEX:
        return None, _Problem(
            UNKNOWN_CLASS,
            f"box {number} has unknown class {text!r}",
            "dropped",
            f"; expected one of {', '.join(VOC_CLASSES)}",
        )
    return _CLASS_INDEX[text], None


def _check_box(obj, number, width, height):
    """Returns `(coords, problem)`: `(xmin, ymin, xmax, ymax)` floats, clipped to the image.

    Coordinates are VOC's 1-based inclusive pixels, and 0 is accepted (0-based tools write it
    for the first column), so the image spans `[0, width] x [0, height]`: a box touching the
    border (`xmax == width`) is inside. `xmin == xmax` is a one-pixel column, kept (as TFDS
    does); a box is empty only when inverted (`xmin > xmax`: for integer pixels its inclusive
    extent `xmax - xmin + 1` is then 0 or less). Dropped boxes return `coords` None.
    """
    bndbox = obj.find("bndbox")
    if bndbox is None:
        return None, _Problem(BAD_COORDINATES, f"box {number} has no <bndbox>", "dropped")
    coords = {}
    for key in _BOX_KEYS:
        node = bndbox.find(key)
        text = (node.text or "").strip() if node is not None else ""
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            return None, _Problem(
                BAD_COORDINATES,
                f"box {number} has a missing or non-numeric <bndbox><{key}> ({text!r})",
                "dropped",
            )
        coords[key] = value
    for low, high in (("xmin", "xmax"), ("ymin", "ymax")):
        if coords[low] > coords[high]:
            return None, _Problem(
                ZERO_AREA,
                f"box {number} has {low} > {high} ({coords[low]:g} > {coords[high]:g})",
                "dropped",
            )
    described = ", ".join(f"{key}={coords[key]:g}" for key in _BOX_KEYS)
    if (
        coords["xmax"] < 0
        or coords["ymax"] < 0
        or coords["xmin"] > width
        or coords["ymin"] > height
    ):
        return None, _Problem(
            OUTSIDE,
            f"box {number} ({described}) lies outside the {width}x{height} image",
            "dropped",
        )
    limits = {"xmin": width, "ymin": height, "xmax": width, "ymax": height}
    clipped = {key: min(max(value, 0.0), limits[key]) for key, value in coords.items()}
    box = tuple(clipped[key] for key in _BOX_KEYS)
    if clipped == coords:
        return box, None
    changed = ", ".join(
        f"{key}={clipped[key]:g}" for key in _BOX_KEYS if clipped[key] != coords[key]
    )
    return box, _Problem(
        BOX_CLIPPED,
        f"box {number} ({described}) lies partly outside the {width}x{height} image",
        f"clipped to {changed}",
    )


def _flag(obj, key):
    """TFDS reads a flag as `text == "1"`; a missing flag reads as False."""
    node = obj.find(key)
    return node is not None and (node.text or "").strip() == "1"


def _pose(obj):
    node = obj.find("pose")
    text = (node.text or "").strip().lower() if node is not None else ""
    return text if text in _POSE_INDEX else "unspecified"


def _read_objects(root, width, height, report):
    """The kept boxes of `root`'s direct `<object>` children, in file order (see `parse_voc_annotation`).

    Each problem goes to `report(problem)`; a box of unknown class, or one `_check_box` drops,
    is left out.
    """
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        label, problem = _check_label(obj, number)
        if problem:
            report(problem)
            continue
        box, problem = _check_box(obj, number, width, height)
        if problem:
            report(problem)
        if box is None:
            continue
        xmin, ymin, xmax, ymax = box
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
    return objects


def parse_voc_annotation(xml_path, *, image_path=None, strict=False):
    """Reads one VOC annotation file into the TFDS `voc` builder's features.

    Only direct `<object>` children count; person-layout `<part>` boxes are ignored, as in
    TFDS. What can be read is read, and each problem is listed in `"problems"`:

    - `<size>` missing or invalid: the size is read from `image_path`'s header
      (`SIZE_FROM_IMAGE`); disagreeing with the image: the image's size is used
      (`SIZE_FIXED`). Boxes are normalised by the size used.
    - a box of unknown class (`UNKNOWN_CLASS`), with a missing or non-numeric coordinate
      (`BAD_COORDINATES`), inverted (`ZERO_AREA`, `xmin > xmax` or `ymin > ymax`) or
      entirely outside the image (`OUTSIDE`) is dropped; one partly outside is clipped to the
      image (`BOX_CLIPPED`). The image spans `[0, width] x [0, height]` in VOC's 1-based
      inclusive pixels, so `xmax == width` touches the border and is not clipped, and
      `xmin == xmax` is a one-pixel column, kept.

    With `strict=True` the first problem raises instead.

    Args:
        xml_path: str or path-like, the `Annotations/<id>.xml` file.
        image_path: str, path-like or None, the image, whose header gives its real size.
            Defaults to None: `<size>` is trusted, and a missing one raises.
        strict: bool, whether any problem raises `VOCAnnotationError`. Defaults to False.

    Returns:
        A dict: `"image_id"` (str, the file name without `.xml`), `"image/filename"`
        (`"<id>.jpg"`, as TFDS), `"width"`, `"height"` (int pixels, those boxes are
        normalised by), `"objects"`, a list in file order of the kept boxes, as dicts with
        `"bbox"` (tuple of 4 floats, normalized `(ymin, xmin, ymax, xmax)` computed as TFDS
        does, see the module docstring), `"label"` (int index in `VOC_CLASSES`),
        `"is_difficult"`, `"is_truncated"` (bool), `"pose"` (str in `VOC_POSES`, unknown
        poses read as `"unspecified"`) and `"area_pixels"` (float, VOC's
        `(xmax - xmin + 1) * (ymax - ymin + 1)` on the (clipped) coordinates); `"problems"`,
        a list of `(reason, text)` in file order, `reason` in `DROP_REASONS` or
        `REPAIR_REASONS`; and `"message"`, one line naming the file and every problem, or
        None when there is none.

    Raises:
        VOCAnnotationError: malformed or unreadable XML, a root other than `<annotation>`
            (`reason` `MALFORMED`), or no size in `<size>` nor from the image (`NO_SIZE`);
            with `strict=True`, any problem above. Boxes are numbered from 1 in file order.

    Example:

    >>> record = parse_voc_annotation("VOC2007/Annotations/000005.xml")
    >>> record["objects"][0]["bbox"]  # chair (xmin, ymin, xmax, ymax) = (263, 211, 324, 339)
    (0.5626666666666666, 0.526, 0.904, 0.648)
    >>> record["problems"], record["message"]
    ([], None)
    """
    xml_path = os.fspath(xml_path)
    name = os.path.basename(xml_path)
    problems = []

    def report(problem):
        if strict:
            raise VOCAnnotationError(
                f"annotation {name}: {problem.text}{problem.hint}", problem.reason
            )
        problems.append((problem.reason, f"{problem.text}, {problem.action}"))

    root = _check_xml(xml_path, name)
    width, height, problem = _check_size(root, name, image_path)
    if problem:
        report(problem)
    objects = _read_objects(root, width, height, report)
    image_id = os.path.splitext(name)[0]
    return {
        "image_id": image_id,
        "image/filename": f"{image_id}.jpg",
        "width": width,
        "height": height,
        "objects": objects,
        "problems": problems,
        "message": f"annotation {name}: " + "; ".join(text for _, text in problems)
        if problems
        else None,
    }


def read_image_set(root, split):
    """Reads the ids of `ImageSets/Main/{split}.txt` in a VOCdevkit year folder.

    Args:
        root: str, the year folder (`.../VOC2007`).
        split: str, the image set, e.g. `"train"`, `"val"`, `"trainval"`, `"test"`.

    Returns:
        List of str ids, in file order, duplicates removed.

    Raises:
        SourceError: the folder or the list file does not exist; the one-line message names
            the missing file, the splits that do exist, and the fix.
    """
    root = os.fspath(root)
    existing_folder(root, f"voc:{root}", "VOC folder")
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
            f"{', '.join(available) if available else 'none (ImageSets/Main is missing or empty)'}; "
            f"create ImageSets/Main/{split}.txt with one image id per line"
        )
    # Surrogate escapes keep an id that is not UTF-8 equal to its files' names (`os.listdir`).
    with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return list(dict.fromkeys(ids))


def _images_by_id(images_dir):
    """id -> sorted image file names in `images_dir` other than `<id>.jpg` (e.g. `<id>.png`)."""
    found = collections.defaultdict(list)
    if os.path.isdir(images_dir):
        for file_name in sorted(os.listdir(images_dir)):
            stem, extension = os.path.splitext(file_name)
            if extension.lower() in image_files.IMAGE_EXTENSIONS and extension != ".jpg":
                found[stem].append(file_name)
    return found


def _pair_files(root, split, ids, skipped, notes):
    """`[(image_id, xml_path, image_path)]` of the ids that have both files, in image-set order.

    An id missing its XML, its image or both is counted in `skipped` and named in
    `notes[image_id]`; an image found under another extension than `.jpg` is paired.
    """
    images_dir = os.path.join(root, "JPEGImages")
    others = _images_by_id(images_dir)
    pairs = []
    for image_id in ids:
        xml_path = os.path.join(root, "Annotations", f"{image_id}.xml")
        image_path = os.path.join(images_dir, f"{image_id}.jpg")
        has_xml, has_image = os.path.isfile(xml_path), os.path.isfile(image_path)
        if not has_image and others.get(image_id):
            image_path, has_image = os.path.join(images_dir, others[image_id][0]), True
        if has_xml and has_image:
            pairs.append((image_id, xml_path, image_path))
        elif has_xml:
            skipped[NO_IMAGE] += 1
            notes[image_id].append(
                f"annotation {image_id}.xml: no image JPEGImages/{image_id}.jpg; skipped"
            )
        elif has_image:
            skipped[NO_ANNOTATION] += 1
            notes[image_id].append(
                f"image {os.path.basename(image_path)}: no annotation Annotations/{image_id}.xml; skipped"
            )
        else:
            skipped[NO_FILES] += 1
            notes[image_id].append(
                f"ImageSets/Main/{split}.txt: id {image_id} has neither JPEGImages/{image_id}.jpg "
                f"nor Annotations/{image_id}.xml; skipped"
            )
    return pairs


def load_voc_records(root, split):
    """Reads the annotations of one split of a VOCdevkit year folder, leaving out what is bad.

    Nothing bad stops the load or passes silently: each file left out or repaired is counted
    under one reason and named in one message line.

    - An id whose XML or image is missing is left out (`NO_IMAGE`, `NO_ANNOTATION`,
      `NO_FILES`); an image found as `<id>.png` (or another image extension) instead of
      `<id>.jpg` is used (`OTHER_EXTENSION`).
    - Images are checked once with `image_files.scan_images`, and left out or read after a
      conversion exactly as in image folders (CMYK, grayscale, a PNG named `.jpg`, ...).
    - Annotations are read by `parse_voc_annotation` with the image's real size: malformed
      XML leaves the image out (`MALFORMED`); a missing or wrong `<size>` is fixed from the
      image; bad boxes are dropped or clipped (see there).

    Args:
        root: str or path-like, the year folder (`.../VOCdevkit/VOC2007`).
        split: str, an image set in `ImageSets/Main/`, e.g. `"train"`.

    Returns:
        A `VOCRecords`: `records`, in image-set order, are `parse_voc_annotation` dicts with
        `"image_path"` added (and `"image/filename"` its base name); `skipped` and `repaired`
        count reasons (empty when all is well); `messages` name the files. Unpacks as
        `records, skipped`.

    Raises:
        SourceError: the folder or the image set does not exist.

    Example:

    >>> loaded = load_voc_records("VOCdevkit/VOC2007", "val")
    >>> loaded.skipped, loaded.repaired
    ({'malformed annotation': 1, 'box of unknown class dropped': 2}, {'box clipped to image': 1})
    >>> print("\n".join(loaded.messages))
    annotation 000123.xml: malformed XML (mismatched tag: line 9, column 2); image skipped
    annotation 000456.xml: box 2 has unknown class 'unicorn', dropped; box 3 has unknown ...
    """
    root = os.fspath(root)
    ids = read_image_set(root, split)
    skipped, repaired = collections.Counter(), collections.Counter()
    notes = collections.defaultdict(list)  # id -> message lines, output in image-set order.
    pairs = _pair_files(root, split, ids, skipped, notes)
    scan = image_files.scan_images([image_path for _, _, image_path in pairs])
    id_of = {image_path: image_id for image_id, _, image_path in pairs}
    skipped.update(scan.skipped)
    for path, reason in scan.skipped_files:
        notes[id_of[path]].append(f"image {os.path.basename(path)}: {reason}; skipped")
    # `getattr`: scan results from before image repairs were reported have neither field.
    repaired.update(getattr(scan, "repaired", {}))
    for path, reason in getattr(scan, "repaired_files", []):
        notes[id_of[path]].append(f"image {os.path.basename(path)}: read, {reason}")
    good = set(scan.good_paths)
    records = []
    for image_id, xml_path, image_path in pairs:
        if image_path not in good:
            continue
        try:
            record = parse_voc_annotation(xml_path, image_path=image_path)
        except VOCAnnotationError as error:
            skipped[error.reason or MALFORMED] += 1
            notes[image_id].append(f"{error}; image skipped")
            continue
        if not image_path.endswith(f"{image_id}.jpg"):
            repaired[OTHER_EXTENSION] += 1
            notes[image_id].append(
                f"image {image_id}.jpg: missing, read {os.path.basename(image_path)} instead"
            )
        for reason, _ in record["problems"]:
            (skipped if reason in DROP_REASONS else repaired)[reason] += 1
        if record["message"]:
            notes[image_id].append(record["message"])
        record["image_path"] = image_path
        record["image/filename"] = os.path.basename(image_path)
        records.append(record)
    messages = [line for image_id in ids for line in notes.get(image_id, [])]
    return VOCRecords(records, dict(skipped), dict(repaired), messages)


def _read_image(path):
    # As image folders decode: the scan's conversions (CMYK, 16-bit, ...) are these.
    image = image_files.decode_rgb(tf.io.read_file(path))
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
            sorted({obj["label"] for obj in record["objects"] if keep(obj)}) for record in records
        ]
        flat = np.asarray([label for labels in sets for label in labels], dtype=np.int64)
        lengths = np.asarray([len(labels) for labels in sets], dtype=np.int64)
        return tf.RaggedTensor.from_row_lengths(flat, lengths)

    table = {
        "path": image_files.path_tensor([record["image_path"] for record in records]),
        "image/filename": image_files.path_tensor([record["image/filename"] for record in records]),
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
    builder = tfds_builder(
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
