"""Tests of `ssl_keras.compare`: config checks, aggregation, plots, and a tiny resumable grid."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ssl_keras import compare
from ssl_keras.backbone import BackboneWeightsError, tiny_backbone
from ssl_keras.compare import (CompareConfig, aggregate, backbone_label, describe_results, format_results_md,
                               grid_cells, plot_metric, run_compare)
from ssl_keras.config import ConfigError, build_config
from ssl_keras.run_directory import RunDirectoryError

TINY = dict(data="synthetic:120", backbone_name="tiny", label_fractions="0.5", modes="freeze", seeds=1, epochs=1,
            image_size=32, batch_size=16)


def _row(backbone, mode, fraction, seed, mean_iou, loc=0.5):
    return {"backbone": backbone, "mode": mode, "label_fraction": fraction, "seed": seed, "num_train_images": 40,
            "mean_iou": mean_iou, "loc_acc@0.5": loc, "loc_acc@0.7": 0.1, "top1": 0.5, "top3": 0.9,
            "cls_loc_acc@0.5": 0.3, "num_test_images": 20, "wall_seconds": 1.0, "run_dir": "x"}


KNOWN_ROWS = [
    _row("ssl", "freeze", 0.1, 0, 0.5, loc=0.2), _row("ssl", "freeze", 0.1, 1, 0.6, loc=0.3),
    _row("ssl", "freeze", 0.1, 2, 0.7, loc=0.4),
    _row("scratch", "freeze", 0.1, 0, 0.4, loc=0.6), _row("scratch", "freeze", 0.1, 1, 0.6, loc=0.6),
    _row("scratch", "freeze", 0.1, 2, 0.5, loc=0.6),
    _row("ssl", "finetune", 1.0, 0, 0.8), _row("scratch", "finetune", 1.0, 0, 0.3),
]


# Config


def test_config_parses_lists_and_labels():
    config = CompareConfig(backbones="ssl:runs/p1, imagenet,scratch,runs/p2/,mine=ssl:runs/p3",
                           label_fractions="0.1,1", modes="freeze,finetune", seeds=2, **{
                               k: v for k, v in TINY.items() if k not in ("label_fractions", "modes", "seeds")})
    assert config.label_fractions == [0.1, 1.0] and config.modes == ["freeze", "finetune"]
    assert config.labelled_backbones() == [("ssl", "ssl:runs/p1"), ("imagenet", "imagenet"), ("scratch", "scratch"),
                                           ("p2", "runs/p2/"), ("mine", "ssl:runs/p3")]
    config.validate()
    cells = grid_cells(config)
    assert len(cells) == 5 * 2 * 2 * 2
    assert cells[0].run_dir == os.path.join("cells", "ssl", "freeze", "frac0.1", "seed0")
    assert backbone_label("runs/p1/encoder.keras") == ("encoder.keras", "runs/p1/encoder.keras")


@pytest.mark.parametrize("overrides, message", [
    ({"label_fractions": "0.5,1.5"}, "--label-fractions must be numbers in (0, 1]"),
    ({"label_fractions": "half"}, "--label-fractions must be comma-separated numbers"),
    ({"modes": "freeze,frozen"}, "--modes must be a comma-separated list of freeze, finetune"),
    ({"seeds": 0}, "--seeds must be an integer >= 1"),
    ({"backbones": "ssl:a,ssl:b"}, "both get the label 'ssl'"),
    ({"epochs": 0}, "--epochs must be an integer >= 1"),  # caught by the cells' DetectConfig
    ({"image_size": 16}, "--image-size must be an integer >= 32"),
])
def test_config_rejects_out_of_range_values(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")):
        build_config(CompareConfig, **{**TINY, "backbones": "scratch", **overrides})


# Aggregation, tables, findings and plots (pure functions)


def test_aggregate_mean_and_sample_std():
    table = aggregate(KNOWN_ROWS)
    assert [(e["mode"], e["label_fraction"], e["backbone"]) for e in table] == [
        ("freeze", 0.1, "ssl"), ("freeze", 0.1, "scratch"), ("finetune", 1.0, "ssl"), ("finetune", 1.0, "scratch")]
    ssl, scratch, single = table[0], table[1], table[2]
    assert ssl["n"] == 3 and ssl["seeds"] == [0, 1, 2]
    # ssl: 0.5, 0.6, 0.7 -> mean 0.6, squared deviations 0.01 + 0 + 0.01 over n-1 = 2 -> std 0.1.
    np.testing.assert_allclose([ssl["mean_iou"], ssl["mean_iou_std"]], [0.6, 0.1])
    # scratch: 0.4, 0.6, 0.5 -> mean 0.5, std 0.1; loc 0.6 thrice -> std 0.
    np.testing.assert_allclose([scratch["mean_iou"], scratch["mean_iou_std"]], [0.5, 0.1])
    np.testing.assert_allclose([scratch["loc_acc@0.5"], scratch["loc_acc@0.5_std"]], [0.6, 0.0], atol=1e-12)
    np.testing.assert_allclose([ssl["loc_acc@0.5"], ssl["loc_acc@0.5_std"]], [0.3, 0.1])
    assert single["n"] == 1 and single["mean_iou"] == 0.8 and single["mean_iou_std"] == 0.0


def test_results_md_marks_best_mean_per_column():
    text = format_results_md(aggregate(KNOWN_ROWS))
    freeze, finetune = text.split("### finetune")
    ssl_row = next(line for line in freeze.splitlines() if line.startswith("| 10% | ssl |"))
    scratch_row = next(line for line in freeze.splitlines() if line.startswith("| 10% | scratch |"))
    # mean IoU: ssl best; loc acc@0.5: scratch best; the other metrics tie, so both are bold.
    assert "**0.600 ± 0.100**" in ssl_row and "| 0.500 ± 0.100 |" in scratch_row
    assert "| 0.300 ± 0.100 |" in ssl_row and "**0.600 ± 0.000**" in scratch_row
    assert "| 3 | 40 |" in ssl_row
    # n=1: shown as ±0, best of its own (mode, fraction) column only.
    assert "**0.800 ±0**" in finetune and "| 0.300 ±0 |" in finetune


def test_describe_results_reports_gap_and_noise():
    table = aggregate(KNOWN_ROWS)
    freeze, finetune = describe_results(table)
    # ssl 0.6 ± 0.1 vs scratch 0.5 ± 0.1: gap 0.1 does not exceed the std 0.1.
    assert "ssl has the best mean IoU, 0.600 vs 0.500 for scratch (+0.100); within noise" in freeze
    assert "one seed only" in finetune and "+0.500" in finetune
    wide = aggregate([_row("a", "freeze", 0.1, s, v) for s, v in enumerate((0.8, 0.82))]
                     + [_row("b", "freeze", 0.1, s, v) for s, v in enumerate((0.5, 0.52))])
    assert "the gap exceeds the std over seeds" in describe_results(wide)[0]


def test_plot_metric_writes_png_of_expected_size(tmp_path):
    table = aggregate(KNOWN_ROWS + [_row("ssl", "freeze", 1.0, 0, 0.7), _row("ssl", "finetune", 0.1, 0, 0.4)])
    path = plot_metric(table, "mean_iou", str(tmp_path / "plot_mean_iou.png"))
    assert os.path.getsize(path) > 8_000
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == (1000, 400)  # two modes, 5 x 4 inches each at 100 dpi


# The grid, end to end (tiny backbone, synthetic data)


def _counting(monkeypatch):
    calls = []
    real = compare.run_detect

    def counted(config, **kwargs):
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(compare, "run_detect", counted)
    return calls


def _offline_imagenet(monkeypatch):
    real = compare.resolve_backbone

    def resolve(config):
        if config.backbone == "imagenet":
            raise BackboneWeightsError("ImageNet weights for tiny cannot be downloaded (no network)")
        return real(config)

    monkeypatch.setattr(compare, "resolve_backbone", resolve)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished 3-backbone grid: scratch and ssl train, imagenet is unavailable."""
    root = tmp_path_factory.mktemp("compare")
    tiny_backbone(width=8).save(root / "encoder.keras")
    config = CompareConfig(backbones=f"scratch,ssl:{root},imagenet", out=str(root / "out"), **TINY).validate()
    logs = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _counting(monkeypatch)
        _offline_imagenet(monkeypatch)
        summary = run_compare(config, log=logs.append)
    return config, summary, calls, logs


def test_grid_runs_cells_and_skips_unavailable_backbone(grid):
    config, summary, calls, logs = grid
    out = summary["out"]
    assert [c.backbone for c in calls] == ["scratch", config.labelled_backbones()[1][1]]
    assert [c["status"] for c in summary["cells"]] == ["trained", "trained", "skipped"]
    for label in ("scratch", "ssl"):
        assert os.path.isfile(os.path.join(out, "cells", label, "freeze", "frac0.5", "seed0", "metrics.json"))
    assert not os.path.exists(os.path.join(out, "cells", "imagenet"))
    reason = "ImageNet weights for tiny cannot be downloaded (no network)"
    assert summary["skipped"] == {"imagenet": reason}
    assert json.load(open(os.path.join(out, "skipped.json"))) == {"imagenet": reason}
    assert any("backbone imagenet (imagenet) is unavailable and skipped" in line for line in logs)
    assert json.load(open(os.path.join(out, "compare.json")))["options"]["backbones"] == config.backbones
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == ["scratch", "ssl"] and list(rows[0]) == list(compare.CSV_COLUMNS)
    metrics = json.load(open(os.path.join(out, rows[1]["run_dir"], "metrics.json")))
    assert float(rows[1]["mean_iou"]) == pytest.approx(metrics["mean_iou"])
    assert [(e["backbone"], e["n"]) for e in summary["table"]] == [("scratch", 1), ("ssl", 1)]


def test_report_links_table_plots_and_skipped(grid):
    _, summary, _, _ = grid
    out = summary["out"]
    report = open(os.path.join(out, "report.md")).read()
    for link in ("(plot_mean_iou.png)", "(plot_loc_acc_0.5.png)", "(results.md)", "(results.csv)"):
        assert link in report
    for name in ("plot_mean_iou.png", "plot_loc_acc_0.5.png", "results.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert "| 50% | ssl | 1 |" in report
    assert "- imagenet (`imagenet`, all its cells): ImageNet weights for tiny cannot be downloaded" in report
    assert "freeze, 50% of the labels:" in report and "one seed only" in report
    assert "Unfinished cells" not in report


def test_rerun_skips_finished_cells_and_resumes_interrupted_one(grid, tmp_path, monkeypatch):
    config, summary, _, _ = grid
    out = tmp_path / "out"
    shutil.copytree(summary["out"], out)
    config = CompareConfig(**{**TINY, "backbones": config.backbones, "out": str(out)}).validate()
    finished = out / "cells" / "scratch" / "freeze" / "frac0.5" / "seed0" / "metrics.json"
    interrupted = out / "cells" / "ssl" / "freeze" / "frac0.5" / "seed0"
    before = (finished.stat().st_mtime_ns, finished.read_text())
    # Killed during its first epoch: config.json written, no checkpoint, no metrics.
    (interrupted / "metrics.json").unlink()
    shutil.rmtree(interrupted / "checkpoints")
    calls = _counting(monkeypatch)
    _offline_imagenet(monkeypatch)
    logs = []
    again = run_compare(config, log=logs.append)
    assert len(calls) == 1 and calls[0].resume and calls[0].out.endswith(os.path.join("ssl", "freeze", "frac0.5", "seed0"))
    assert (finished.stat().st_mtime_ns, finished.read_text()) == before
    assert (interrupted / "metrics.json").is_file()
    assert [c["status"] for c in again["cells"]] == ["done", "resumed", "skipped"]
    assert any("scratch/freeze/frac0.5/seed0: done, skipped" in line for line in logs)
    assert any("continuing the comparison" in line for line in logs)


def test_gradcam_hook_is_called_and_linked(grid, tmp_path):
    config, summary, _, _ = grid
    out = tmp_path / "out"
    shutil.copytree(summary["out"], out)
    config = CompareConfig(**{**TINY, "backbones": config.backbones, "out": str(out)}).validate()
    seen = {}

    def gradcam(out_dir, cell_dirs):
        seen.update(cell_dirs)
        path = os.path.join(out_dir, "gradcam_grid.png")
        Image.new("RGB", (8, 8)).save(path)
        return path

    result = compare.summarize_compare(config, gradcam=gradcam, log=lambda line: None)
    assert sorted(seen) == [("scratch", "freeze", 0.5, 0), ("ssl", "freeze", 0.5, 0)]
    assert all(os.path.isfile(os.path.join(d, "metrics.json")) for d in seen.values())
    assert "![Grad-CAM grid](gradcam_grid.png)" in open(result["outputs"]["report"]).read()


def test_out_is_refused_unless_it_holds_the_same_comparison(grid, tmp_path):
    config, summary, _, _ = grid
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="holds no compare.json"):
        run_compare(CompareConfig(**{**TINY, "backbones": "scratch", "out": str(stray)}).validate(), log=lambda s: None)
    assert os.listdir(stray) == ["notes.txt"]
    other = CompareConfig(**{**TINY, "backbones": config.backbones, "out": summary["out"], "epochs": 2}).validate()
    with pytest.raises(RunDirectoryError, match="epochs: 1 there, 2 now"):
        run_compare(other, log=lambda s: None)


def test_all_backbones_unavailable_is_an_error(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    _offline_imagenet(monkeypatch)
    config = CompareConfig(**{**TINY, "backbones": "imagenet,ssl:" + str(tmp_path / "missing"),
                              "out": str(tmp_path / "out")}).validate()
    with pytest.raises(BackboneWeightsError, match="no backbone of --backbones can be had") as error:
        run_compare(config, log=lambda s: None)
    assert "imagenet: ImageNet weights" in str(error.value) and "no such pretrain run" in str(error.value)
    assert calls == []
    assert set(json.load(open(tmp_path / "out" / "skipped.json"))) == {"imagenet", "ssl"}
