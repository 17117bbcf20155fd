"""`ssl-keras detect` on a broken VOCdevkit: trains on what can be read, names each broken file
once, counts every reason in metrics.json, and stops with one line when a split list is missing.

The folder is a few real VOC2007 pairs copied at test time (`tests/voc_devkit.py`), then broken.
"""

import json

import pytest
from cli_runs import command_args, invoke_as_user, options
from PIL import Image
from voc_devkit import annotation_xml
from voc_devkit import copy_devkit
from voc_devkit import image_size
from voc_devkit import write_annotation

from ssl_keras.data import image_files
from ssl_keras.data import voc


def _detect(root, out):
    tiny = options(backbone="scratch", backbone_name="tiny", epochs=1, image_size=32, batch_size=8)
    return invoke_as_user(
        command_args("detect", f"voc:{root}", out, *tiny, export=False, quiet=True)
    )


@pytest.fixture
def devkit(tmp_path, shared_data):
    root = tmp_path / "VOC2007"
    return root, copy_devkit(shared_data / "voc2007", root, {"train": 10, "val": 4, "test": 4})


@pytest.mark.large
def test_detect_reads_what_it_can_and_reports_each_broken_file_once(devkit, tmp_path):
    root, ids = devkit
    train, val = ids["train"], ids["val"]
    write_annotation(root, train[0], "<annotation><size>")
    truncated = root / "JPEGImages" / f"{train[1]}.jpg"
    truncated.write_bytes(truncated.read_bytes()[:4000])
    width, height = image_size(root, train[2])
    write_annotation(
        root, train[2], annotation_xml([("dog", (5, 5, width + 30, 80))], size=(width, height))
    )
    width, height = image_size(root, train[3])
    write_annotation(
        root,
        train[3],
        annotation_xml(
            [("unicorn", (1, 1, 90, 90)), ("cat", (10, 10, 60, 60))], size=(width, height)
        ),
    )
    write_annotation(root, train[4], annotation_xml([("horse", (10, 20, 110, 120))], size=None))
    (root / "Annotations" / f"{train[5]}.xml").unlink()
    cmyk = root / "JPEGImages" / f"{train[6]}.jpg"
    with Image.open(cmyk) as image:
        image.convert("CMYK").save(cmyk, format="JPEG", quality=90)
    width, height = image_size(root, val[0])
    write_annotation(
        root,
        val[0],
        annotation_xml([("bus", (70, 5, 20, 40)), ("car", (10, 10, 60, 60))], size=(width, height)),
    )

    out = tmp_path / "run"
    result = _detect(root, out)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    broken = [
        f"{train[0]}.xml",
        f"{train[1]}.jpg",
        f"{train[2]}.xml",
        f"{train[3]}.xml",
        f"{train[4]}.xml",
        f"{train[5]}.jpg",
        f"{train[6]}.jpg",
        f"{val[0]}.xml",
    ]
    for name in broken:
        assert result.output.count(name) == 1, (name, result.output)
    assert "box 1 has unknown class 'unicorn', dropped" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    # The flat totals and the per-split counts are written by `detect.data_report`.
    assert metrics["skipped"] == {
        voc.MALFORMED: 1,
        image_files.TRUNCATED: 1,
        voc.UNKNOWN_CLASS: 1,
        voc.NO_ANNOTATION: 1,
        voc.ZERO_AREA: 1,
    }
    assert metrics["skipped_by_split"]["train"] == {
        voc.NO_ANNOTATION: 1,
        image_files.TRUNCATED: 1,
        voc.MALFORMED: 1,
        voc.UNKNOWN_CLASS: 1,
    }
    assert metrics["skipped_by_split"]["val"] == {voc.ZERO_AREA: 1}
    assert metrics["skipped_by_split"]["test"] == {}
    assert metrics["repaired"] == {voc.BOX_CLIPPED: 1, voc.SIZE_FROM_IMAGE: 1, image_files.CMYK: 1}
    assert metrics["repaired_by_split"]["train"] == metrics["repaired"]
    assert len(metrics["data_messages"]) == len(broken)
    # 10 listed, 3 left out (malformed, truncated, no annotation); the repaired ones train.
    assert metrics["num_train_images"] == 7 and metrics["num_test_images"] == 4


def test_detect_without_a_split_list_stops_with_one_line(devkit, tmp_path):
    root, _ = devkit
    (root / "ImageSets" / "Main" / "test.txt").unlink()
    result = _detect(root, tmp_path / "run")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if "test.txt" in line]
    assert len(lines) == 1
    assert lines[0].startswith("Error: ")
    assert "create ImageSets/Main/test.txt with one image id per line" in lines[0]
