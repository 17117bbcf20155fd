"""Experiment files: parsing and validation, and one tiny experiment run end to end with an interruption."""

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from ssl_keras.cli.main import main
from ssl_keras.compare.compare import grid_cells
from ssl_keras.runs.config import ConfigError
from ssl_keras.experiment.experiment import load_experiment

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["paper_cpu.yaml", "paper_gpu.yaml"])
def test_shipped_experiment_files_parse_and_validate(name, monkeypatch):
    monkeypatch.chdir(REPO)
    experiment = load_experiment(REPO / "experiments" / name)
    assert set(experiment.pretrain) == {"ssl", "supervised"}
    assert (
        experiment.pretrain["ssl"].method == "simclr"
        and experiment.pretrain["supervised"].method == "supervised"
    )
    labels = dict(experiment.compare.labelled_backbones())
    assert list(labels) == ["ssl", "supervised", "scratch", "imagenet"]
    # pretrain:NAME becomes the encoder that stage writes, under the experiment's out folder.
    assert labels["ssl"] == "ssl:" + os.path.join(experiment.out, "pretrain", "ssl")
    assert labels["supervised"] == os.path.join(experiment.out, "pretrain", "supervised")
    assert experiment.compare.out == os.path.join(experiment.out, "compare")
    assert experiment.compare.label_fractions == [0.1, 0.25, 1.0] and experiment.compare.seeds == 3
    assert experiment.compare.modes == ["freeze", "freeze-then-finetune"]
    assert len(grid_cells(experiment.compare)) == 4 * 3 * 2 * 3
    assert experiment.analysis.reference == "ssl" and experiment.analysis.at == [0.1, 0.25]
    if name == "paper_gpu.yaml":
        assert experiment.compare.image_size == 240 and experiment.pretrain["ssl"].image_size == 240
        assert experiment.compare.data == "tfds:voc/2007"
    else:
        assert experiment.compare.data == "voc:../shared/data/voc2007"


GOOD = """\
name: tiny
out: {out}
pretrain:
  ssl: {{method: simclr, data: "synthetic:64", backbone: tiny, epochs: 1, image_size: 32, batch_size: 16, export: false}}
compare:
  data: "synthetic:120"
  backbones: [ssl=pretrain:ssl, scratch]
  label_fractions: [0.5, 1.0]
  modes: [freeze]
  seeds: 2
  backbone_name: tiny
  image_size: 32
  batch_size: 8
  epochs: 2
analysis: {{reference: ssl, at: [0.5], gradcam_images: 2, gradcam_mass_images: 6}}
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t + "extra: 1\n", "unknown key(s) extra"),
        (
            lambda t: t.replace("epochs: 1,", "epochs: one,"),
            "pretrain.ssl: epochs must be int; got 'one'",
        ),
        (lambda t: t.replace("epochs: 1,", "epoch: 1,"), "pretrain.ssl: unknown option 'epoch'"),
        (lambda t: t.replace("seeds: 2", "seeds: 0"), "compare: --seeds must be an integer >= 1"),
        (
            lambda t: t.replace("ssl=pretrain:ssl", "ssl=pretrain:simclr"),
            "names the pretrain stage 'simclr'",
        ),
        (
            lambda t: t.replace("reference: ssl", "reference: mine"),
            "reference 'mine' is not one of the compared",
        ),
        (
            lambda t: t.replace("  seeds: 2", "  seeds: 2\n  out: elsewhere"),
            "compare: 'out' is set by the experiment",
        ),
        (
            lambda t: t.replace("at: [0.5]", "at: [2]"),
            "analysis.at must be a list of label fractions in (0, 1]",
        ),
        (
            lambda t: t.replace("modes: [freeze]", "modes: [frozen]"),
            "--modes must be a comma-separated list",
        ),
        (
            lambda t: t.replace("compare:", "compare: [").replace("analysis:", "]\nanalysis:"),
            "not valid YAML",
        ),
        (lambda t: t.split("compare:")[0], "the key 'compare' is missing"),
        (lambda t: t + "workers: 0\n", "workers must be an integer >= 1; got 0"),
    ],
)
def test_bad_experiment_file_gets_a_clear_error_naming_the_file(tmp_path, edit, message):
    path = write(tmp_path, edit(GOOD.format(out=tmp_path / "out")))
    with pytest.raises(ConfigError) as error:
        load_experiment(path)
    assert message in str(error.value) and str(path) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_file_without_a_traceback_and_check_prints_the_grid(tmp_path):
    bad = write(
        tmp_path, GOOD.format(out=tmp_path / "out").replace("epochs: 1,", "epochs: -3,"), "bad.yaml"
    )
    result = CliRunner().invoke(main, ["experiment", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"experiment file {bad}, pretrain.ssl" in result.output
        and "--epochs must be an integer >= 1" in result.output
    )
    good = write(tmp_path, GOOD.format(out=tmp_path / "out"))
    result = CliRunner().invoke(main, ["experiment", str(good), "--check"])
    assert result.exit_code == 0, result.output
    assert "8 detect cells (ssl, scratch x freeze x fractions 0.5, 1.0 x 2 seeds)" in result.output
    assert not (tmp_path / "out").exists()
    missing = CliRunner().invoke(main, ["experiment", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and "no such file" in missing.output


def start(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "ssl_keras.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def result_rows(out):
    with open(out / "compare" / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in row.items() if "wall" not in k} for row in rows]


@pytest.mark.large
def test_tiny_experiment_interrupted_mid_grid_continues_to_the_same_tables(tmp_path):
    # The reference runs in this process; the interrupted run and its continuation in two worker
    # processes, so this also checks that the workers give the same tables.
    reference_out, interrupted_out = tmp_path / "reference", tmp_path / "interrupted"
    reference = write(tmp_path, GOOD.format(out=reference_out), "reference.yaml")
    interrupted = write(tmp_path, GOOD.format(out=interrupted_out), "interrupted.yaml")

    result = CliRunner().invoke(main, ["experiment", str(reference)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "labels saved:" in result.output

    process = start(["experiment", str(interrupted), "--workers", "2"], cwd=tmp_path)
    deadline = time.time() + 300
    # SIGINT once the first cell has finished and the second has started.
    while time.time() < deadline and process.poll() is None:
        if (
            len(list(interrupted_out.glob("compare/cells/**/metrics.json"))) >= 1
            and len(list(interrupted_out.glob("compare/cells/*/*/*/*/config.json"))) >= 2
        ):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the experiment ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130 and "Traceback" not in stdout + stderr, stdout + stderr
    assert (
        f"Continue the experiment with the same command: ssl-keras experiment {interrupted}"
        in stderr
    )
    assert not (interrupted_out / "report.md").exists()
    finished = len(list(interrupted_out.glob("compare/cells/**/metrics.json")))
    assert 1 <= finished < 8

    result = CliRunner().invoke(
        main, ["experiment", str(interrupted), "--workers", "2"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "pretrain 1/1 ssl: done, skipped" in result.output and "done, skipped" in result.output
    assert result_rows(interrupted_out) == result_rows(reference_out)
    record = json.loads((interrupted_out / "experiment.json").read_text())
    assert len(record["invocations"]) == 2 and record["invocations"][-1]["finished"]
    assert not record["invocations"][0]["finished"]
    assert [item["workers"] for item in record["invocations"]] == [2, 2]

    report = (interrupted_out / "report.md").read_text()
    for heading in (
        "How many labels does the reference save?",
        "## Pretraining",
        "## Transfer",
        "## Grad-CAM",
    ):
        assert heading in report
    assert "prior_box" in report and "2 invocation(s)" in report
    analysis = json.loads((interrupted_out / "analysis.json").read_text())
    assert analysis["labels_saved"] and analysis["headline"][0].startswith("labels saved")
    mass = analysis["gradcam"]["freeze"]["mass"]
    assert set(mass) == {"ssl", "scratch"}
    for entry in mass.values():
        for value in entry.values():
            assert value["mean"] is None or 0.0 <= value["mean"] <= 1.0
    assert (interrupted_out / "gradcam" / "freeze" / "gradcam_box.png").exists()


def test_continuing_with_a_changed_file_is_refused_and_changes_nothing(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path, GOOD.format(out=out))
    from ssl_keras.experiment.experiment import prepare_experiment_directory

    prepare_experiment_directory(load_experiment(path), log=lambda _: None)
    before = (out / "experiment.json").read_text()
    changed = write(
        tmp_path, GOOD.format(out=out).replace("epochs: 2", "epochs: 3"), "changed.yaml"
    )
    result = CliRunner().invoke(main, ["experiment", str(changed)])
    assert result.exit_code == 1 and "holds an experiment with other options" in result.output
    assert "compare.epochs: 2 there, 3 now" in result.output
    assert (out / "experiment.json").read_text() == before


def test_labels_saved_rows_are_flagged_where_the_reference_does_not_beat_the_prior_box():
    from ssl_keras.compare.compare import aggregate
    from ssl_keras.experiment.experiment_report import with_prior_caveat
    from ssl_keras.experiment.labels_saved import labels_saved

    def row(backbone, fraction, seed, iou, margin):
        return {
            "backbone": backbone,
            "mode": "freeze",
            "label_fraction": fraction,
            "seed": seed,
            "num_train_images": 40,
            "num_test_images": 20,
            "wall_seconds": 1.0,
            "run_dir": "x",
            "mean_iou": iou,
            "mean_iou_margin": margin,
        }

    # At 10% ssl is 0.10 above the prior on both seeds; at 25% it sits on the prior (margins -0.01, +0.01).
    rows = [
        row("ssl", 0.1, 0, 0.50, 0.10),
        row("ssl", 0.1, 1, 0.52, 0.10),
        row("ssl", 0.25, 0, 0.40, -0.01),
        row("ssl", 0.25, 1, 0.42, 0.01),
        row("scratch", 0.1, 0, 0.30, -0.1),
        row("scratch", 0.1, 1, 0.32, -0.1),
        row("scratch", 0.25, 0, 0.36, -0.05),
        row("scratch", 0.25, 1, 0.38, -0.05),
        row("scratch", 1.0, 0, 0.60, 0.2),
        row("scratch", 1.0, 1, 0.62, 0.2),
    ]
    saved = with_prior_caveat(
        labels_saved(aggregate(rows), reference="ssl", at=[0.1, 0.25]), aggregate(rows)
    )
    by_fraction = {r["at"]: r for r in saved}
    assert (
        by_fraction[0.1]["reference_vs_prior"] == "beats"
        and "caveat" not in by_fraction[0.1]["text"]
    )
    assert by_fraction[0.25]["reference_vs_prior"] == "within noise"
    assert "caveat: ssl is within noise of the constant prior box here" in by_fraction[0.25]["text"]
