"""EXIF orientation: every stage uses the stored pixels, as TFDS and the VOC tools do, and a
file whose orientation tag is not 1 is reported; an annotation drawn on the rotated view is
left out instead of having its size "fixed" (which gave targets of IoU 0.59)."""

import bad_files
import numpy as np
from voc_devkit import annotation_xml, copy_devkit, write_annotation

from ssl_keras.data import image_files, voc


def test_decoding_ignores_exif_and_the_scan_reports_it(tmp_path):
    path = bad_files.exif_rotated_jpeg(tmp_path, size=(64, 48), orientation=6)
    assert image_files.load_rgb(path).shape == (48, 64, 3)  # Stored frame, not rotated.
    scan = image_files.scan_images([path, bad_files.good_jpeg(tmp_path)])
    assert scan.repaired == {image_files.EXIF_IGNORED: 1}
    assert scan.repaired_files == [(path, image_files.EXIF_IGNORED)]


def _rotated_devkit(tmp_path, shared_data, xml_size):
    root = tmp_path / "VOC2007"
    ids = copy_devkit(shared_data / "voc2007", root, {"train": 4, "val": 1, "test": 1})
    image_id = ids["train"][0]
    bad_files.exif_rotated_jpeg(root / "JPEGImages", name=f"{image_id}.jpg", size=(64, 48))
    box = ("dog", (4, 10, 40, 60)) if xml_size == (48, 64) else ("dog", (10, 4, 60, 40))
    write_annotation(root, image_id, annotation_xml([box], size=xml_size))
    return root, ids, image_id


def test_an_annotation_of_the_rotated_view_is_left_out_and_named(tmp_path, shared_data):
    root, ids, image_id = _rotated_devkit(tmp_path, shared_data, xml_size=(48, 64))
    loaded = voc.load_voc_records(root, "train")
    assert image_id not in [r["image_id"] for r in loaded.records]
    assert loaded.skipped == {voc.EXIF_FRAME: 1}
    assert voc.SIZE_FIXED not in loaded.repaired
    (line,) = [m for m in loaded.messages if f"{image_id}.xml" in m]
    assert "EXIF-rotated view" in line and "orientation 6" in line and "skipped" in line


def test_an_annotation_of_the_stored_frame_is_read_and_the_exif_reported(tmp_path, shared_data):
    root, ids, image_id = _rotated_devkit(tmp_path, shared_data, xml_size=(64, 48))
    loaded = voc.load_voc_records(root, "train")
    (record,) = [r for r in loaded.records if r["image_id"] == image_id]
    assert (record["width"], record["height"]) == (64, 48) and record["problems"] == []
    assert loaded.repaired == {image_files.EXIF_IGNORED: 1}
    ymin, xmin, ymax, xmax = record["objects"][0]["bbox"]
    assert np.allclose([xmin, xmax], [9 / 64, 60 / 64], atol=0.02)
