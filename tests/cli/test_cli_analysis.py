"""End-to-end tests of `ssl-keras compare`, `gradcam` and `probe` (tiny backbone, real files)."""

import csv
import json
import os

import pytest
from cli_runs import command_args, invoke, invoke_as_user, options
from PIL import Image

from ssl_keras.backbone import tiny_backbone


@pytest.mark.large
def test_compare_command_writes_the_report_with_a_gradcam_grid(tmp_path):
    encoder_dir = tmp_path / "pretrain"
    encoder_dir.mkdir()
    tiny_backbone(width=8).save(encoder_dir / "encoder.keras")
    out = tmp_path / "cmp"
    grid = options(backbones=f"ssl:{encoder_dir},scratch", label_fractions=0.5, modes="freeze")
    cells = options(seeds=1, epochs=1, image_size=32, batch_size=16, backbone_name="tiny")
    args = command_args("compare", "synthetic:120", out, *grid, *cells, gradcam_images=2)
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
    tiny = options(backbone_name="tiny", epochs=1, image_size=32, batch_size=32)
    result = invoke(command_args("detect", f"voc:{voc}", run, *tiny, quiet=True, export=False))
    assert result.exit_code == 0, result.output
    images = [str(voc / "JPEGImages" / name) for name in sorted(os.listdir(voc / "JPEGImages"))[:2]]
    result = invoke(["gradcam", "--model", run, "--model", run, *images, "--out", tmp_path / "cam"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cam" / "gradcam_grid.png").is_file()
    assert len(os.listdir(tmp_path / "cam")) == 1 + 2 * 2  # grid + one overlay per image and model
    rerun = invoke_as_user(["gradcam", "--model", run, *images, "--out", tmp_path / "cam"])
    assert rerun.exit_code != 0 and "exists" in rerun.output and "Traceback" not in rerun.output

    probe_options = options(
        backbone="scratch", backbone_name="tiny", method="knn", image_size=32, max_per_class=10
    )
    result = invoke(
        command_args("probe", shared_data / "unlabeled", tmp_path / "probe", *probe_options)
    )
    assert result.exit_code == 0, result.output
    probe = json.loads((tmp_path / "probe" / "probe.json").read_text())
    assert probe["num_train"] == 100 and probe["num_test"] == 100  # 10 classes x 10 per split
    assert 0.0 <= probe["top1"] <= probe["top3"] <= 1.0
