"""An id listed in both train.txt and test.txt (split leakage) is warned about and counted,
and can be dropped from train."""

import json

import pytest
from click.testing import CliRunner
from voc_devkit import copy_devkit

from ssl_keras.cli.main import main
from ssl_keras.data.localization import OVERLAP_DROPPED, load_localization_data, split_overlap


@pytest.fixture
def leaky(tmp_path, shared_data):
    """A devkit whose train.txt also lists two test ids."""
    root = tmp_path / "VOC2007"
    ids = copy_devkit(shared_data / "voc2007", root, {"train": 6, "val": 4, "test": 4})
    shared = ids["test"][:2]
    listing = root / "ImageSets" / "Main" / "train.txt"
    listing.write_text("\n".join(ids["train"] + shared) + "\n")
    return root, ids, shared


def test_split_overlap_counts_shared_ids():
    listed = {"train": ["a", "b", "c"], "val": ["x"], "test": ["c", "a", "y"]}
    assert split_overlap(listed) == {"test": ["a", "c"]}
    assert split_overlap({"train": ["a"], "test": ["b"]}) == {}


def test_shared_ids_are_warned_about_and_counted(leaky):
    root, ids, shared = leaky
    data = load_localization_data(f"voc:{root}", image_size=32, batch_size=4)
    assert data.split_overlap == {"test": 2}
    assert set(shared) <= set(data.train_ids)  # Kept by default, but not silently.
    (line,) = [m for m in data.messages if m.startswith("warning: ImageSets/Main/train.txt")]
    assert "test.txt share 2 ids" in line and all(i in line for i in shared)


def test_shared_ids_can_be_dropped_from_train(leaky):
    root, ids, shared = leaky
    data = load_localization_data(
        f"voc:{root}", image_size=32, batch_size=4, drop_split_overlap=True
    )
    assert not set(shared) & set(data.train_ids) and len(data.train_ids) == 6
    assert data.skipped["train"][OVERLAP_DROPPED] == 2
    assert data.split_overlap == {"test": 2}
    assert sum(1 for _ in data.train.unbatch()) == 6
    assert set(shared) <= set(data.image_ids["test"])


@pytest.mark.large
def test_detect_drops_the_overlap_on_request_and_records_it_in_metrics_json(leaky, tmp_path):
    root, _, shared = leaky
    out = tmp_path / "run"
    args = ["detect", "--data", f"voc:{root}", "--backbone", "scratch", "--backbone-name"]
    args += ["tiny", "--epochs", "1", "--image-size", "32", "--batch-size", "4", "--no-export"]
    args += ["--drop-split-overlap", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_overlap"] == {"test": 2}
    assert metrics["skipped_by_split"]["train"] == {OVERLAP_DROPPED: 2}
    assert metrics["num_train_images"] == 6
    assert any("share 2 ids" in line for line in metrics["data_messages"])
