import os
import shutil
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf

from ssl_keras.data import tfds_builder
from ssl_keras.data import voc
from ssl_keras.data.source_spec import SourceError
from ssl_keras.data.voc import VOCAnnotationError
from ssl_keras.data.voc import load_tfds_voc
from ssl_keras.data.voc import load_voc_records
from ssl_keras.data.voc import parse_voc_annotation
from ssl_keras.data.voc import voc_feature_dataset

# The shared subset's README table: images, objects, objects with difficult=0.
README_COUNTS = {
    "train": (430, 1364, 1075),
    "val": (138, 508, 402),
    "test": (297, 926, 755),
}

# VOC2007 000005.xml as published (five chairs). 000005 is one of the images held out of the
# shared subset, so the test writes it out; the README quotes its first box.
XML_000005 = """<annotation>
  <folder>VOC2007</folder><filename>000005.jpg</filename>
  <size><width>500</width><height>375</height><depth>3</depth></size>
  <segmented>0</segmented>
  {objects}
</annotation>"""
CHAIRS_000005 = [
    # xmin, ymin, xmax, ymax, pose, truncated, difficult
    (263, 211, 324, 339, "Rear", 0, 0),
    (165, 264, 253, 372, "Unspecified", 1, 0),
    (5, 244, 67, 374, "Unspecified", 1, 1),
    (241, 194, 295, 299, "Rear", 0, 1),
    (277, 186, 312, 220, "Unspecified", 1, 1),
]


def _object_xml(name, box, pose="Unspecified", truncated=0, difficult=0):
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>{pose}</pose><truncated>{truncated}</truncated>"
        f"<difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def _write_000005(folder):
    objects = "".join(
        _object_xml("chair", c[:4], pose=c[4], truncated=c[5], difficult=c[6])
        for c in CHAIRS_000005
    )
    path = folder / "000005.xml"
    path.write_text(XML_000005.format(objects=objects))
    return path


@pytest.fixture(scope="module")
def voc_root(shared_data):
    return shared_data / "voc2007"


@pytest.fixture(scope="module")
def split_records(voc_root):
    return {split: load_voc_records(voc_root, split) for split in README_COUNTS}


def test_classes_and_poses_are_tfds_order():
    tfds_voc = pytest.importorskip("tensorflow_datasets.object_detection.voc")
    assert voc.VOC_CLASSES == tfds_voc._VOC_LABELS
    assert voc.VOC_POSES == tfds_voc._VOC_POSES
    assert len(voc.VOC_CLASSES) == 20


def test_parse_000005(tmp_path):
    record = parse_voc_annotation(_write_000005(tmp_path))
    assert record["image_id"] == "000005" and record["image/filename"] == "000005.jpg"
    assert (record["width"], record["height"]) == (500, 375)
    objects = record["objects"]
    assert len(objects) == 5
    assert all(obj["label"] == voc.VOC_CLASSES.index("chair") for obj in objects)
    first = objects[0]
    # TFDS divides the 1-based coordinates without subtracting 1.
    assert first["bbox"] == (211 / 375, 263 / 500, 339 / 375, 324 / 500)
    assert first["area_pixels"] == (324 - 263 + 1) * (339 - 211 + 1)
    assert first["pose"] == "rear" and not first["is_truncated"] and not first["is_difficult"]
    assert [obj["is_difficult"] for obj in objects] == [False, False, True, True, True]
    assert [obj["is_truncated"] for obj in objects] == [False, True, True, False, True]


def test_boxes_match_tfds_builder_on_every_real_annotation(voc_root):
    """Our parser against TFDS's own: same labels, flags and float boxes, on all 865 files.

    Parsed with the image, as `load_voc_records` does: every real `<size>` equals the JPEG's
    and every box lies inside it (628 touch the border, `xmax == width`), so nothing is fixed.
    """
    tfds_voc = pytest.importorskip("tensorflow_datasets.object_detection.voc")
    paths = sorted((voc_root / "Annotations").glob("*.xml"))
    assert len(paths) == 865
    for path in paths:
        record = parse_voc_annotation(path, image_path=voc_root / "JPEGImages" / f"{path.stem}.jpg")
        assert record["problems"] == [] and record["message"] is None, record["message"]
        ours = record["objects"]
        theirs = list(tfds_voc._get_example_objects(str(path)))
        assert len(ours) == len(theirs), path.name
        for a, b in zip(ours, theirs):
            assert a["bbox"] == tuple(b["bbox"]), path.name
            assert voc.VOC_CLASSES[a["label"]] == b["label"]
            assert a["pose"] == b["pose"]
            assert a["is_difficult"] == b["is_difficult"]
            assert a["is_truncated"] == b["is_truncated"]


def test_real_split_counts_match_readme(split_records):
    total_objects = 0
    for split, (images, objects, non_difficult) in README_COUNTS.items():
        records, skipped = split_records[split]
        assert skipped == {}
        # No real file needs a repair: sizes agree with the JPEGs, border boxes are inside.
        assert split_records[split].repaired == {} and split_records[split].messages == []
        assert len(records) == images
        assert sum(len(r["objects"]) for r in records) == objects
        assert sum(not o["is_difficult"] for r in records for o in r["objects"]) == non_difficult
        total_objects += objects
        for record in records:
            assert os.path.basename(record["image_path"]) == record["image/filename"]
            for obj in record["objects"]:
                ymin, xmin, ymax, xmax = obj["bbox"]
                assert 0 < ymin <= ymax <= 1 and 0 < xmin <= xmax <= 1
    assert total_objects == 2798


def test_records_follow_image_set_order(voc_root, split_records):
    ids = (voc_root / "ImageSets" / "Main" / "val.txt").read_text().split()
    assert [r["image_id"] for r in split_records["val"].records] == ids


def test_feature_dataset_has_tfds_structure(split_records):
    tfds = pytest.importorskip("tensorflow_datasets")
    records = split_records["val"].records
    # Landscape and portrait images, and one with many objects.
    chosen = [r for r in records if r["height"] > r["width"]][:2]
    chosen += sorted(records, key=lambda r: -len(r["objects"]))[:1] + records[:3]
    dataset = voc_feature_dataset(chosen)

    info = tfds.builder("voc/2007").info.features.get_tensor_info()
    spec = dataset.element_spec
    assert set(spec) == set(info)
    assert set(spec["objects"]) == set(info["objects"])
    for key in ("image", "image/filename", "labels", "labels_no_difficult"):
        assert spec[key].dtype == info[key].dtype, key
        assert spec[key].shape.rank == len(info[key].shape), key
    for key, tensor_info in info["objects"].items():
        assert spec["objects"][key].dtype == tensor_info.dtype, key
        assert spec["objects"][key].shape.rank == len(tensor_info.shape), key

    for record, element in zip(chosen, dataset):
        assert element["image"].shape == (record["height"], record["width"], 3)
        assert element["image"].dtype == tf.uint8
        assert element["image/filename"].numpy().decode() == record["image/filename"]
        objects = element["objects"]
        np.testing.assert_allclose(
            objects["bbox"].numpy(),
            np.asarray([o["bbox"] for o in record["objects"]]),
            rtol=1e-6,
        )
        assert objects["label"].numpy().tolist() == [o["label"] for o in record["objects"]]
        assert objects["is_difficult"].numpy().tolist() == [
            o["is_difficult"] for o in record["objects"]
        ]
        assert element["labels"].numpy().tolist() == sorted({o["label"] for o in record["objects"]})
        assert element["labels_no_difficult"].numpy().tolist() == sorted(
            {o["label"] for o in record["objects"] if not o["is_difficult"]}
        )


def test_feature_dataset_shuffle_is_seeded(split_records):
    records = split_records["val"].records[:12]
    names = lambda ds: [e["image/filename"].numpy() for e in ds]  # noqa: E731
    first = names(voc_feature_dataset(records, shuffle=True, seed=3))
    again = names(voc_feature_dataset(records, shuffle=True, seed=3))
    assert first == again and sorted(first) == sorted(names(voc_feature_dataset(records)))
    assert first != names(voc_feature_dataset(records))


@pytest.mark.parametrize(
    "body, message",
    [
        ("<annotation><size>", "malformed XML"),
        ("<annotation>{obj}</annotation>", r"missing or invalid <size><width>"),
        (
            "<annotation><size><width>500</width><height>0</height></size>{obj}</annotation>",
            r"<size><height> \('0'\)",
        ),
        (
            "<annotation><size><width>500</width><height>375</height></size>{obj}"
            "<object><name>unicorn</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
            "box 2 has unknown class 'unicorn'; expected one of aeroplane",
        ),
        ("<other><size><width>5</width></size></other>", "root element is <other>"),
        (
            "<annotation><size><width>500</width><height>375</height></size>"
            "<object><name>dog</name><bndbox><xmin>51</xmin><ymin>1</ymin>"
            "<xmax>12</xmax><ymax>2</ymax></bndbox></object></annotation>",
            r"box 1 has xmin > xmax \(51 > 12\)",
        ),
        (
            "<annotation><size><width>500</width><height>375</height></size>"
            "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
            "<xmax>501</xmax><ymax>2</ymax></bndbox></object></annotation>",
            "outside the 500x375 image",
        ),
        (
            "<annotation><size><width>500</width><height>375</height></size>"
            "<object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object></annotation>",
            r"box 1 has a missing or non-numeric <bndbox><ymin>",
        ),
    ],
)
def test_annotation_errors_name_file_and_problem(tmp_path, body, message):
    """`strict=True` raises on the first problem; by default only unreadable files raise."""
    path = tmp_path / "000123.xml"
    path.write_text(body.format(obj=_object_xml("dog", (1, 1, 2, 2))))
    with pytest.raises(VOCAnnotationError, match=message) as error:
        parse_voc_annotation(path, strict=True)
    assert str(error.value).startswith("annotation 000123.xml: ")
    assert isinstance(error.value, ValueError)
    assert "\n" not in str(error.value)
    if error.value.reason in (voc.MALFORMED, voc.NO_SIZE):
        with pytest.raises(VOCAnnotationError, match=message):
            parse_voc_annotation(path)
    else:
        record = parse_voc_annotation(path)
        assert [reason for reason, _ in record["problems"]] == [error.value.reason]
        assert record["message"].startswith("annotation 000123.xml: ")


def test_missing_flags_read_as_tfds_does(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(
        "<annotation><size><width>10</width><height>20</height></size>"
        "<object><name> Dog </name><pose>Sideways</pose><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>10</xmax><ymax>20</ymax></bndbox></object></annotation>"
    )
    (obj,) = parse_voc_annotation(path)["objects"]
    assert obj["label"] == voc.VOC_CLASSES.index("dog")
    assert obj["pose"] == "unspecified"
    assert not obj["is_difficult"] and not obj["is_truncated"]
    assert obj["bbox"] == (1 / 20, 1 / 10, 1.0, 1.0) and obj["area_pixels"] == 200


def test_missing_split_lists_available(voc_root):
    with pytest.raises(
        SourceError,
        match="trainval.txt; available splits: test, train, val; "
        "create ImageSets/Main/trainval.txt with one image id per line",
    ):
        load_voc_records(voc_root, "trainval")
    with pytest.raises(SourceError, match="does not exist"):
        load_voc_records(voc_root / "nowhere", "train")


def test_missing_and_broken_files_are_counted(tmp_path, voc_root):
    ids = (voc_root / "ImageSets" / "Main" / "val.txt").read_text().split()[:6]
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    for image_id in ids:
        shutil.copy(voc_root / "Annotations" / f"{image_id}.xml", tmp_path / "Annotations")
        shutil.copy(voc_root / "JPEGImages" / f"{image_id}.jpg", tmp_path / "JPEGImages")
    (tmp_path / "JPEGImages" / f"{ids[0]}.jpg").unlink()
    (tmp_path / "Annotations" / f"{ids[1]}.xml").unlink()
    truncated = tmp_path / "JPEGImages" / f"{ids[2]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    listed = ids + ["999999"]  # Listed, but neither file exists.
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("\n".join(listed) + "\n")

    loaded = load_voc_records(tmp_path, "val")
    records, skipped = loaded  # Still unpacks as two fields.
    assert [r["image_id"] for r in records] == ids[3:]
    assert skipped == {
        voc.NO_IMAGE: 1,
        voc.NO_ANNOTATION: 1,
        voc.NO_FILES: 1,
        "truncated": 1,
    }
    assert loaded.messages == [
        f"annotation {ids[0]}.xml: no image JPEGImages/{ids[0]}.jpg; skipped",
        f"image {ids[1]}.jpg: no annotation Annotations/{ids[1]}.xml; skipped",
        f"image {ids[2]}.jpg: truncated; skipped",
        "ImageSets/Main/val.txt: id 999999 has neither JPEGImages/999999.jpg nor "
        "Annotations/999999.xml; skipped",
    ]


def test_tfds_voc_offline_fails_fast_with_alternatives(tmp_path, offline_tfds_error):
    message = offline_tfds_error(load_tfds_voc, "voc/2007", "validation")
    assert "voc:PATH" in message and "--manual_dir" in message and str(tmp_path) in message


def test_tfds_voc_mocked_offline_and_bad_name(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tfds_builder, "network_available", lambda: False)
    with pytest.raises(SourceError, match="tfds build voc/2012 --manual_dir"):
        load_tfds_voc("voc/2012", "train")
    with pytest.raises(SourceError, match="'cifar10' is not Pascal VOC"):
        voc.tfds_voc_builder("cifar10")


def test_real_annotations_are_well_formed_xml(voc_root):
    """The parser sees every <object>, including those with person-layout <part> boxes."""
    parts = 0
    for path in (voc_root / "Annotations").glob("*.xml"):
        root = ElementTree.parse(path).getroot()
        parts += len(root.findall("object/part"))
        assert len(parse_voc_annotation(path)["objects"]) == len(root.findall("object"))
    assert parts > 0
