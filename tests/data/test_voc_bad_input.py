"""Bad VOCdevkit folders: what is read after a repair, what is left out, and what stops a run.

Each test copies a few real VOC2007 images and annotations (`tests/voc_devkit.py`) and breaks
copies at test time: annotation text comes from Python strings, bad images from
`tests/bad_files.py`.
"""

import bad_files
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from voc_devkit import annotation_xml
from voc_devkit import copy_devkit
from voc_devkit import image_size
from voc_devkit import object_xml
from voc_devkit import write_annotation

from ssl_keras.data import image_files
from ssl_keras.data import voc
from ssl_keras.data.localization import NO_TARGET_LEFT
from ssl_keras.data.localization import load_localization_data
from ssl_keras.data.localization import select_target
from ssl_keras.data.source_spec import SourceError
from ssl_keras.data.voc import load_voc_records
from ssl_keras.data.voc import voc_feature_dataset


@pytest.fixture
def devkit(tmp_path, shared_data):
    """`(root, ids)`: a fresh VOCdevkit with 8 train, 4 val and 4 test real pairs."""
    root = tmp_path / "VOC2007"
    return root, copy_devkit(shared_data / "voc2007", root)


def _record(loaded, image_id):
    (record,) = [r for r in loaded.records if r["image_id"] == image_id]
    return record


def _label(name):
    return voc.VOC_CLASSES.index(name)


def _train_image(devkit, index):
    """`(image_id, (width, height))` of the devkit's `index`-th train image."""
    root, ids = devkit
    image_id = ids["train"][index]
    return image_id, image_size(root, image_id)


def _reloaded(devkit, image_id, objects, size):
    """The train split loaded after `image_id`'s annotation is rewritten to hold `objects`
    (as `annotation_xml` takes them) and `size`; returns `(loaded, the image's record)`."""
    root, _ = devkit
    write_annotation(root, image_id, annotation_xml(objects, size=size))
    loaded = load_voc_records(root, "train")
    return loaded, _record(loaded, image_id)


def _assert_others_untouched(loaded, ids, broken):
    """The ids that were not broken are all read, with nothing to report."""
    kept = [r["image_id"] for r in loaded.records]
    assert [i for i in ids if i not in broken] == [i for i in kept if i not in broken]
    assert all(r["problems"] == [] for r in loaded.records if r["image_id"] not in broken)


@pytest.mark.parametrize(
    "text, detail",
    [
        ("<annotation><size><width>500</width>", "malformed XML (no element found: line 1"),
        (b"\xff\xd8\xff\xe0 not xml at all", "malformed XML (not well-formed (invalid token)"),
        ("<html><body>404</body></html>", "the root element is <html>, not <annotation>"),
    ],
)
def test_malformed_annotation_skips_the_image(devkit, text, detail):
    root, ids = devkit
    bad = ids["train"][2]
    write_annotation(root, bad, text)
    loaded = load_voc_records(root, "train")
    assert bad not in [r["image_id"] for r in loaded.records]
    assert loaded.skipped == {voc.MALFORMED: 1} and loaded.repaired == {}
    (message,) = loaded.messages
    assert message.startswith(f"annotation {bad}.xml: {detail}") and message.endswith(
        "; image skipped"
    )
    _assert_others_untouched(loaded, ids["train"], {bad})


@pytest.mark.parametrize(
    "size, text",
    [
        (None, "missing or invalid <size><width> ('')"),
        (("abc", 375), "missing or invalid <size><width> ('abc')"),
        ((500, 0), "missing or invalid <size><height> ('0')"),
        ((500, "nan"), "missing or invalid <size><height> ('nan')"),
    ],
)
def test_missing_or_invalid_size_is_read_from_the_image(devkit, size, text):
    image_id, (width, height) = _train_image(devkit, 0)
    loaded, record = _reloaded(devkit, image_id, [("dog", (11, 21, 101, 201))], size)
    assert (record["width"], record["height"]) == (width, height)
    assert record["objects"][0]["bbox"] == (21 / height, 11 / width, 201 / height, 101 / width)
    assert loaded.repaired == {voc.SIZE_FROM_IMAGE: 1} and loaded.skipped == {}
    assert loaded.messages == [
        f"annotation {image_id}.xml: {text}, size {width}x{height} read from {image_id}.jpg"
    ]


def test_size_disagreeing_with_the_image_is_fixed_from_the_image(devkit):
    image_id, (width, height) = _train_image(devkit, 1)
    # Halved, as a tool that saved a thumbnail's size would write; the box fits the real image
    # only, so it must not be clipped either.
    box = (width - 60, height - 50, width - 10, height - 5)
    loaded, record = _reloaded(devkit, image_id, [("cat", box)], (width // 2, height // 2))
    assert (record["width"], record["height"]) == (width, height)
    xmin, ymin, xmax, ymax = box
    assert record["objects"][0]["bbox"] == (
        ymin / height,
        xmin / width,
        ymax / height,
        xmax / width,
    )
    assert loaded.repaired == {voc.SIZE_FIXED: 1} and loaded.skipped == {}
    assert loaded.messages == [
        f"annotation {image_id}.xml: <size> {width // 2}x{height // 2} disagrees with "
        f"{image_id}.jpg ({width}x{height}), boxes normalised by the image's size"
    ]


def test_inverted_box_is_dropped_and_a_one_pixel_box_kept(devkit):
    """VOC's coordinates are inclusive: xmin == xmax is a one-pixel column, xmin > xmax none."""
    image_id, (width, height) = _train_image(devkit, 0)
    objects = [
        ("dog", (10, 10, 50, 60)),
        ("cat", (51, 5, 12, 40)),
        ("horse", (30, 10, 30, 20)),
        ("bird", (5, 40, 9, 39)),
    ]
    loaded, record = _reloaded(devkit, image_id, objects, (width, height))
    assert [o["label"] for o in record["objects"]] == [_label("dog"), _label("horse")]
    assert record["objects"][1]["area_pixels"] == 1 * 11
    assert loaded.skipped == {voc.ZERO_AREA: 2} and loaded.repaired == {}
    assert loaded.messages == [
        f"annotation {image_id}.xml: box 2 has xmin > xmax (51 > 12), dropped; "
        "box 4 has ymin > ymax (40 > 39), dropped"
    ]


@pytest.mark.parametrize(
    "obj, text",
    [
        (
            object_xml("dog", (10, "", 50, 60)),
            "box 2 has a missing or non-numeric <bndbox><ymin> ('')",
        ),
        (
            object_xml("dog", (10, 20, "5O", 60)),
            "box 2 has a missing or non-numeric <bndbox><xmax> ('5O')",
        ),
        (
            object_xml("dog", (10, 20, 50, "inf")),
            "box 2 has a missing or non-numeric <bndbox><ymax> ('inf')",
        ),
        ("<object><name>dog</name></object>", "box 2 has no <bndbox>"),
    ],
)
def test_box_with_bad_coordinates_is_dropped(devkit, obj, text):
    image_id, size = _train_image(devkit, 0)
    loaded, record = _reloaded(devkit, image_id, [("cat", (1, 2, 3, 4)), obj], size)
    assert [o["label"] for o in record["objects"]] == [_label("cat")]
    assert loaded.skipped == {voc.BAD_COORDINATES: 1}
    assert loaded.messages == [f"annotation {image_id}.xml: {text}, dropped"]


def test_box_partly_outside_is_clipped_and_one_outside_dropped(devkit):
    image_id, (width, height) = _train_image(devkit, 3)
    objects = [
        ("person", (-5, 10, width + 20, 40)),  # partly outside: clipped
        ("car", (1, 1, width, height)),  # touches every border: inside, as in real VOC
        ("bus", (width + 5, 10, width + 50, 40)),  # entirely right of the image: dropped
        ("cow", (20, 30, 60, height + 1)),  # one pixel below: clipped
    ]
    loaded, record = _reloaded(devkit, image_id, objects, (width, height))
    boxes = [o["bbox"] for o in record["objects"]]
    assert boxes == [
        (10 / height, 0.0, 40 / height, 1.0),
        (1 / height, 1 / width, 1.0, 1.0),
        (30 / height, 20 / width, 1.0, 60 / width),
    ]
    assert record["objects"][0]["area_pixels"] == (width + 1) * 31
    assert loaded.repaired == {voc.BOX_CLIPPED: 2} and loaded.skipped == {voc.OUTSIDE: 1}
    assert loaded.messages == [
        f"annotation {image_id}.xml: box 1 (xmin=-5, ymin=10, xmax={width + 20}, ymax=40) lies "
        f"partly outside the {width}x{height} image, clipped to xmin=0, xmax={width}; "
        f"box 3 (xmin={width + 5}, ymin=10, xmax={width + 50}, ymax=40) lies outside the "
        f"{width}x{height} image, dropped; box 4 (xmin=20, ymin=30, xmax=60, ymax={height + 1}) "
        f"lies partly outside the {width}x{height} image, clipped to ymax={height}"
    ]


def test_unknown_class_box_is_dropped_and_the_next_largest_is_the_target(devkit):
    image_id, (width, height) = _train_image(devkit, 0)
    objects = [
        ("unicorn", (1, 1, width, height)),
        ("dog", (10, 10, 110, 90)),
        ("", (1, 1, 300, 300)),
        ("cat", (10, 10, 20, 20)),
    ]
    loaded, record = _reloaded(devkit, image_id, objects, (width, height))
    assert select_target(record["objects"])[1] == _label("dog")
    np.testing.assert_array_equal(
        select_target(record["objects"])[0],
        np.float32([10 / height, 10 / width, 90 / height, 110 / width]),
    )
    assert loaded.skipped == {voc.UNKNOWN_CLASS: 2}
    assert loaded.messages == [
        f"annotation {image_id}.xml: box 1 has unknown class 'unicorn', dropped; "
        "box 3 has unknown class '', dropped"
    ]


def test_image_whose_boxes_are_all_dropped_counts_as_no_target_left(devkit):
    root, ids = devkit
    image_id = ids["train"][4]
    size = image_size(root, image_id)
    write_annotation(
        root,
        image_id,
        annotation_xml([("unicorn", (1, 1, 50, 50)), ("dog", (60, 1, 10, 50))], size=size),
    )
    data = load_localization_data(f"voc:{root}", image_size=32, batch_size=4)
    assert image_id not in data.train_ids and len(data.train_ids) == len(ids["train"]) - 1
    assert data.skipped["train"] == {voc.UNKNOWN_CLASS: 1, voc.ZERO_AREA: 1, NO_TARGET_LEFT: 1}
    assert data.skipped["val"] == data.skipped["test"] == {}
    assert data.repaired == {"train": {}, "val": {}, "test": {}}
    assert data.messages == [
        f"annotation {image_id}.xml: box 1 has unknown class 'unicorn', dropped; "
        "box 2 has xmin > xmax (60 > 10), dropped; no target left, image skipped"
    ]


def test_missing_files_and_an_image_with_another_extension(devkit):
    root, ids = devkit
    no_image, no_xml, as_png, missing = ids["train"][:3] + ["009999"]
    (root / "JPEGImages" / f"{no_image}.jpg").unlink()
    (root / "Annotations" / f"{no_xml}.xml").unlink()
    jpeg = root / "JPEGImages" / f"{as_png}.jpg"
    with Image.open(jpeg) as image:
        image.save(root / "JPEGImages" / f"{as_png}.png")
    jpeg.unlink()
    listed = ids["train"] + [missing]
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(listed) + "\n")
    loaded = load_voc_records(root, "train")
    assert [r["image_id"] for r in loaded.records] == ids["train"][2:]
    assert loaded.skipped == {voc.NO_IMAGE: 1, voc.NO_ANNOTATION: 1, voc.NO_FILES: 1}
    assert loaded.repaired == {voc.OTHER_EXTENSION: 1}
    record = _record(loaded, as_png)
    assert record["image/filename"] == f"{as_png}.png"
    assert loaded.messages == [
        f"annotation {no_image}.xml: no image JPEGImages/{no_image}.jpg; skipped",
        f"image {no_xml}.jpg: no annotation Annotations/{no_xml}.xml; skipped",
        f"image {as_png}.jpg: missing, read {as_png}.png instead",
        f"ImageSets/Main/train.txt: id {missing} has neither JPEGImages/{missing}.jpg nor "
        f"Annotations/{missing}.xml; skipped",
    ]
    (element,) = voc_feature_dataset([record]).as_numpy_iterator()
    assert element["image"].shape == (record["height"], record["width"], 3)


def test_bad_image_files_are_skipped_or_read_as_in_image_folders(devkit, tmp_path):
    """The image matrix placed in JPEGImages as `<id>.jpg`, each with a matching annotation."""
    root, ids = devkit
    matrix = bad_files.write_image_matrix(tmp_path / "matrix")
    cases = dict(zip(ids["train"], matrix.items()))
    for image_id, (case, (path, outcome)) in cases.items():
        target = root / "JPEGImages" / f"{image_id}.jpg"
        target.write_bytes(open(path, "rb").read())
        size = image_size(root, image_id) if outcome == bad_files.READ else (64, 48)
        write_annotation(root, image_id, annotation_xml([("dog", (2, 3, 30, 40))], size=size))
    loaded = load_voc_records(root, "train")
    read = [i for i, (_, (_, outcome)) in cases.items() if outcome == bad_files.READ]
    assert [r["image_id"] for r in loaded.records] == read
    assert loaded.skipped == {image_files.EMPTY: 1, image_files.TRUNCATED: 1}
    assert loaded.repaired == {
        image_files.WRONG_EXTENSION: 1,
        image_files.CMYK: 1,
        image_files.GRAYSCALE: 1,
        image_files.SIXTEEN_BIT: 1,
        image_files.ALPHA: 1,
    }
    by_case = {case: image_id for image_id, (case, _) in cases.items()}
    assert f"image {by_case['zero_byte']}.jpg: {image_files.EMPTY}; skipped" in loaded.messages
    assert f"image {by_case['cmyk_jpeg']}.jpg: read, {image_files.CMYK}" in loaded.messages
    # One line per reported file; the non-ASCII-named JPEG, copied as <id>.jpg, is plain.
    assert len(loaded.messages) == 7
    for record, element in zip(loaded.records, voc_feature_dataset(loaded.records)):
        assert element["image"].shape == (record["height"], record["width"], 3)
        assert element["image"].dtype == tf.uint8


def test_missing_image_set_stops_naming_the_file_and_the_fix(devkit):
    root, _ = devkit
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(SourceError) as error:
        load_localization_data(f"voc:{root}", image_size=32, batch_size=4)
    message = str(error.value)
    assert "\n" not in message
    assert f"no image set {root / 'ImageSets' / 'Main' / 'test.txt'}" in message
    assert "available splits: train, val" in message
    assert "create ImageSets/Main/test.txt with one image id per line" in message


def test_empty_image_set_stops_naming_the_file(devkit):
    root, _ = devkit
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n\n")
    with pytest.raises(
        SourceError, match=r"val.txt lists no image id; write one image id per line"
    ):
        load_localization_data(f"voc:{root}", image_size=32, batch_size=4)


def test_split_with_no_usable_image_stops_naming_the_list_and_what_was_left_out(devkit):
    root, ids = devkit
    for image_id in ids["val"][:3]:
        write_annotation(root, image_id, "<annotation>")
    (root / "JPEGImages" / f"{ids['val'][3]}.jpg").write_bytes(b"")
    with pytest.raises(SourceError) as error:
        load_localization_data(f"voc:{root}", image_size=32, batch_size=4)
    message = str(error.value)
    assert "\n" not in message
    assert (
        f"image set val has no usable image (left out: 1 empty file, 3 malformed annotation); "
        f"check {root / 'ImageSets' / 'Main' / 'val.txt'}"
    ) in message
