"""A small VOCdevkit year folder made at test time from the shared VOC2007 subset.

`copy_devkit` copies a few real images and annotations with their ids and writes the train,
val and test lists; tests then corrupt the copies. Annotation text is written from Python
strings (`annotation_xml`), so no broken file is committed.
"""

import shutil
import xml.etree.ElementTree as ElementTree

from PIL import Image

SPLIT_SIZES = {"train": 8, "val": 4, "test": 4}


def _has_target(xml_path):
    """Whether the real annotation has a non-difficult object (so the copy is usable as is)."""
    root = ElementTree.parse(xml_path).getroot()
    return any(obj.findtext("difficult", "0").strip() != "1" for obj in root.findall("object"))


def copy_devkit(voc_root, dest, sizes=None):
    """Copies the first usable ids of each real image set into `dest`.

    Args:
        voc_root: pathlib.Path, the shared `voc2007` folder.
        dest: pathlib.Path, the new year folder (created).
        sizes: dict split -> number of ids. Defaults to `SPLIT_SIZES`.

    Returns:
        dict split -> list of str ids, as written to `ImageSets/Main/<split>.txt`.
    """
    sizes = sizes or SPLIT_SIZES
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dest / folder).mkdir(parents=True, exist_ok=True)
    listed = {}
    for split, count in sizes.items():
        real = (voc_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
        ids = [i for i in real if _has_target(voc_root / "Annotations" / f"{i}.xml")][:count]
        for image_id in ids:
            shutil.copy(voc_root / "Annotations" / f"{image_id}.xml", dest / "Annotations")
            shutil.copy(voc_root / "JPEGImages" / f"{image_id}.jpg", dest / "JPEGImages")
        (dest / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        listed[split] = ids
    return listed


def image_size(root, image_id, extension=".jpg"):
    """`(width, height)` of `JPEGImages/<id><extension>`."""
    with Image.open(root / "JPEGImages" / f"{image_id}{extension}") as image:
        return image.size


def object_xml(name, box, difficult=0):
    """One `<object>`; `box` is `(xmin, ymin, xmax, ymax)`, any item may be a string."""
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def annotation_xml(objects, size=None):
    """A VOC annotation: `objects` is a list of `object_xml` strings (or `(name, box)`);
    `size` is `(width, height)` (items may be strings), or None for no `<size>`."""
    body = "".join(obj if isinstance(obj, str) else object_xml(*obj) for obj in objects)
    size_xml = ""
    if size is not None:
        size_xml = (
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        )
    return f"<annotation><folder>VOC2007</folder>{size_xml}{body}</annotation>"


def write_annotation(root, image_id, text):
    """Writes `Annotations/<id>.xml` (str text, or bytes written as they are)."""
    path = root / "Annotations" / f"{image_id}.xml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path
