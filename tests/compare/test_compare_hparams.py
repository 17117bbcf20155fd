"""The compare run's TensorBoard HParams view: one session per row of results.csv (issue 14)."""

import pytest
from stand_ins import baselines_record, write_cell
from hparams_events import read_hparams_logs

from ssl_keras.compare.compare import CompareConfig, summarize_compare

PRIOR_IOU = {(0.1, 0): 0.40, (0.1, 1): 0.42, (1.0, 0): 0.45, (1.0, 1): 0.44}
MODEL_IOU = {"ssl": 0.6, "scratch": 0.41}


def _write_cell(out, backbone, fraction, seed):
    """A finished cell's metrics.json as detect writes it, its values told apart by the cell."""
    return write_cell(
        out,
        backbone,
        fraction,
        seed,
        mean_iou=MODEL_IOU[backbone] + fraction / 10 + seed / 100,
        top1=0.7,
        balanced_top1=0.65,
        baselines=baselines_record(PRIOR_IOU[fraction, seed]),
    )


def _config(out):
    return CompareConfig(
        data="synthetic:120",
        backbones="ssl:runs/p1,scratch",
        label_fractions="0.1,1",
        modes="freeze",
        seeds=2,
        backbone_name="tiny",
        out=str(out),
    )


def test_every_cell_and_baseline_row_is_a_session_with_its_metrics(tmp_path):
    out = tmp_path / "out"
    written = {
        (backbone, fraction, seed): _write_cell(out, backbone, fraction, seed)
        for backbone in ("ssl", "scratch")
        for fraction in (0.1, 1.0)
        for seed in (0, 1)
    }
    summary = summarize_compare(_config(out), log=lambda line: None)
    assert summary["outputs"]["hparams"] == str(out / "logs")
    experiment, sessions, files = read_hparams_logs(out / "logs")

    assert experiment["hparams"] == {
        "backbone": ["majority_class", "prior_box", "scratch", "ssl"],
        "mode": ["freeze"],
        "label_fraction": [0.1, 1.0],
        "seed": [0.0, 1.0],
    }
    assert experiment["metrics"]["mean_iou"] == "mean IoU"
    assert experiment["metrics"]["top1_margin"] == "Δ top-1 vs majority"
    assert {"loc_acc@0.5", "cls_loc_acc@0.5", "balanced_top1", "loc_acc@0.7_margin"} <= set(
        experiment["metrics"]
    )
    # 8 cells, and a prior_box and a majority_class row per fraction and seed.
    assert len(sessions) == 8 + 2 * 4
    assert all(count == 1 for count in files.values())
    for (backbone, fraction, seed), metrics in written.items():
        session = sessions[f"{backbone}/freeze/frac{fraction}/seed{seed}"]
        assert session["hparams"] == {
            "backbone": backbone,
            "mode": "freeze",
            "label_fraction": fraction,
            "seed": float(seed),
        }
        assert session["metrics"]["mean_iou"] == pytest.approx(metrics["mean_iou"])
        assert session["metrics"]["top1"] == pytest.approx(0.7)
        assert session["metrics"]["mean_iou_margin"] == pytest.approx(
            metrics["mean_iou"] - PRIOR_IOU[fraction, seed]
        )
    prior = sessions["prior_box/freeze/frac1.0/seed1"]
    assert prior["hparams"]["backbone"] == "prior_box"
    # The prior box has box metrics only: no top-1 and no margin is written for it.
    assert prior["metrics"] == pytest.approx(
        {"mean_iou": 0.44, "loc_acc@0.5": 0.34, "loc_acc@0.7": 0.05}
    )
    assert "tensorboard --logdir" in (out / "report.md").read_text()


def test_a_continued_grid_replaces_its_sessions(tmp_path):
    out = tmp_path / "out"
    config = _config(out)
    _write_cell(out, "ssl", 0.1, 0)
    summarize_compare(config, log=lambda line: None)
    _write_cell(out, "scratch", 0.1, 0)
    summarize_compare(config, log=lambda line: None)
    _, sessions, files = read_hparams_logs(out / "logs")
    assert sorted(s for s in sessions if not s.startswith(("prior_box", "majority_class"))) == [
        "scratch/freeze/frac0.1/seed0",
        "ssl/freeze/frac0.1/seed0",
    ]
    assert len(sessions) == 4 and all(count == 1 for count in files.values())


def test_no_finished_cell_writes_no_logs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    summary = summarize_compare(_config(out), log=lambda line: None)
    assert "hparams" not in summary["outputs"] and not (out / "logs").exists()
