import os

import pytest
from hparams_events import read_hparams_logs

from ssl_keras.runs.hparams import write_hparams_logs


def _write(path, sessions):
    return write_hparams_logs(
        path,
        sessions,
        hparams={"backbone": ["ssl", "scratch"], "fraction": [0.1, 1.0], "seed": [0, 1]},
        metrics=["mean_iou", "loc_acc@0.5"],
        metric_titles={"mean_iou": "mean IoU"},
    )


def test_sessions_hold_their_hparams_and_metrics(tmp_path):
    logs = _write(
        tmp_path / "logs",
        [
            (
                "ssl/frac0.1/seed0",
                {"backbone": "ssl", "fraction": 0.1, "seed": 0},
                {"mean_iou": 0.61, "loc_acc@0.5": 0.5},
            ),
            # A metric the run does not have is left out, not written as 0.
            (
                "scratch/frac1.0/seed1",
                {"backbone": "scratch", "fraction": 1.0, "seed": 1},
                {"mean_iou": 0.42, "loc_acc@0.5": None},
            ),
        ],
    )
    experiment, sessions, files = read_hparams_logs(logs)
    assert experiment == {
        "hparams": {"backbone": ["scratch", "ssl"], "fraction": [0.1, 1.0], "seed": [0.0, 1.0]},
        "metrics": {"mean_iou": "mean IoU", "loc_acc@0.5": "loc_acc@0.5"},
    }
    assert sessions["ssl/frac0.1/seed0"]["folder"] == "ssl/frac0.1/seed0"
    assert sessions["ssl/frac0.1/seed0"]["hparams"] == {
        "backbone": "ssl",
        "fraction": 0.1,
        "seed": 0.0,
    }
    assert sessions["ssl/frac0.1/seed0"]["metrics"] == pytest.approx(
        {"mean_iou": 0.61, "loc_acc@0.5": 0.5}
    )
    assert sessions["scratch/frac1.0/seed1"]["metrics"] == pytest.approx({"mean_iou": 0.42})
    assert set(sessions) == {"ssl/frac0.1/seed0", "scratch/frac1.0/seed1"}


def test_writing_again_replaces_the_older_sessions(tmp_path):
    one = ("ssl/frac0.1/seed0", {"backbone": "ssl", "fraction": 0.1, "seed": 0}, {"mean_iou": 0.6})
    two = ("ssl/frac1.0/seed0", {"backbone": "ssl", "fraction": 1.0, "seed": 0}, {"mean_iou": 0.7})
    _write(tmp_path / "logs", [one])
    _write(tmp_path / "logs", [one, two])
    _, sessions, files = read_hparams_logs(tmp_path / "logs")
    assert set(sessions) == {"ssl/frac0.1/seed0", "ssl/frac1.0/seed0"}
    # One event file per folder: a second summary of a session would be a duplicate row.
    assert files == {".": 1, "ssl/frac0.1/seed0": 1, "ssl/frac1.0/seed0": 1}
    assert sorted(os.listdir(tmp_path)) == ["logs"]
