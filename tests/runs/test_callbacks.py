"""`read_best_epoch`: a damaged best-epoch record is one line naming it (`runs/callbacks.py`)."""

import json

import pytest

from ssl_keras.runs.callbacks import BestEpoch, read_best_epoch
from ssl_keras.runs.run_directory import RunFileError


def test_a_truncated_or_edited_best_epoch_record_is_one_line_naming_it(tmp_path):
    path = tmp_path / "best_epoch.json"
    assert read_best_epoch(str(path)) is None
    path.write_text(json.dumps({"epoch": 2, "monitor": "val_mean_iou", "value": 0.5}))
    assert BestEpoch(str(tmp_path / "best.weights.h5"), str(path)).record["epoch"] == 2
    path.write_text('{"epoch": 2, "monitor": "val_me')
    with pytest.raises(RunFileError, match=f"^{path}: not valid JSON"):
        BestEpoch(str(tmp_path / "best.weights.h5"), str(path))
    path.write_text('["not", "a", "record"]')
    with pytest.raises(RunFileError, match=f"^{path}: holds no best-epoch value"):
        read_best_epoch(str(path))
