"""End-to-end tests of `ssl-keras compare`, `gradcam` and `probe` (tiny backbone, real files)."""

import csv
import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image

from ssl_keras.backbone import tiny_backbone
from ssl_keras.cli.main import main


def invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.large
def test_compare_command_writes_the_report_with_a_gradcam_grid(tmp_path):
    encoder_dir = tmp_path / "pretrain"
    encoder_dir.mkdir()
    tiny_backbone(width=8).save(encoder_dir / "encoder.keras")
    out = tmp_path / "cmp"
    args = [
        "compare",
        "--data",
        "synthetic:120",
        "--backbones",
        f"ssl:{encoder_dir},scratch",
        "--label-fractions",
        "0.5",
        "--modes",
        "freeze",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--backbone-name",
        "tiny",
        "--out",
        str(out),
        "--gradcam-images",
        "2",
    ]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(open(out / "results.csv")))
    # One row per cell, then the trivial baselines of its one fraction x seed.
    assert [r["backbone"] for r in table] == ["ssl", "scratch", "prior_box", "majority_class"]
    rows = table[:2]
    report = (out / "report.md").read_text()
    assert "plot_mean_iou.png" in report and "gradcam_grid.png" in report
    assert "Baselines: `prior_box`" in report and "the constant prior box (margin" in report
    with Image.open(out / "gradcam" / "gradcam_grid.png") as grid:
        assert grid.width > 200 and grid.height > 200
    # Running it again trains nothing and keeps the finished cells.
    before = {r["run_dir"]: os.path.getmtime(out / r["run_dir"] / "metrics.json") for r in rows}
    again = invoke(args)
    assert again.exit_code == 0 and "done" in again.output
    assert before == {d: os.path.getmtime(out / d / "metrics.json") for d in before}


@pytest.mark.large
def test_gradcam_and_probe_commands_on_real_files(shared_data, tmp_path):
    voc = shared_data / "voc2007"
    run = tmp_path / "detect"
    result = invoke(
        [
            "detect",
            "--data",
            f"voc:{voc}",
            "--backbone-name",
            "tiny",
            "--out",
            str(run),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "32",
            "--quiet",
            "--no-export",
        ]
    )
    assert result.exit_code == 0, result.output
    images = [str(voc / "JPEGImages" / name) for name in sorted(os.listdir(voc / "JPEGImages"))[:2]]
    result = invoke(
        [
            "gradcam",
            "--model",
            str(run),
            "--model",
            str(run),
            *images,
            "--out",
            str(tmp_path / "cam"),
        ]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cam" / "gradcam_grid.png").is_file()
    assert len(os.listdir(tmp_path / "cam")) == 1 + 2 * 2  # grid + one overlay per image and model
    rerun = CliRunner().invoke(
        main, ["gradcam", "--model", str(run), *images, "--out", str(tmp_path / "cam")]
    )
    assert rerun.exit_code != 0 and "exists" in rerun.output and "Traceback" not in rerun.output

    result = invoke(
        [
            "probe",
            "--backbone",
            "scratch",
            "--backbone-name",
            "tiny",
            "--data",
            str(shared_data / "unlabeled"),
            "--out",
            str(tmp_path / "probe"),
            "--method",
            "knn",
            "--image-size",
            "32",
            "--max-per-class",
            "10",
        ]
    )
    assert result.exit_code == 0, result.output
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert probe["num_train"] == 100 and probe["num_test"] == 100  # 10 classes x 10 per split
    assert 0.0 <= probe["top1"] <= probe["top3"] <= 1.0
