"""End-to-end tests of issue 10's pretraining: supervised pretraining, defaults that follow the
run's length, learning above chance, and every `ssl-keras pretrain` command of the README."""

import csv
import json
import math
import pathlib
import re
import shlex
import shutil

import keras
import pytest
from cli_runs import command_args, copy_photos, invoke, invoke_as_user, options, resume_args

from ssl_keras.backbone import tiny_backbone
from ssl_keras.data.unlabeled_images import load_image_source
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

TINY = ["--backbone", "tiny", "--image-size", "32", "--quiet"]
DETECT_ONE_EPOCH = options(epochs=1, image_size=32, batch_size=32, label_fraction=0.25, quiet=True)
"""`ssl-keras detect` options of the check that detect accepts a supervised run."""
README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def labelled_photos(shared_data, tmp_path_factory):
    """3 Imagenette classes x (16 train + 4 val) real photos, with a manifest.csv like the shared one."""
    return manifest_subset(shared_data, tmp_path_factory.mktemp("labelled"), 3, train=16, val=4)


def manifest_subset(shared_data, folder, num_classes, *, train, val):
    """Copies `train` + `val` photos of each of the first `num_classes` Imagenette classes into
    `folder`, with their rows of the shared manifest.csv; returns `folder`."""
    with open(shared_data / "unlabeled" / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({row["wnid"] for row in rows})[:num_classes]
    kept = []
    for wnid in classes:
        for split, count in (("train", train), ("val", val)):
            kept += [
                row for row in rows if row["wnid"] == wnid and row["imagenette_split"] == split
            ][:count]
    folder.mkdir(parents=True, exist_ok=True)
    for row in kept:
        shutil.copy(shared_data / "unlabeled" / row["file"], folder / row["file"])
    with open(folder / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return folder


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return copy_photos(shared_data, tmp_path_factory.mktemp("photos"), 64)


@pytest.mark.large
def test_supervised_pretraining_learns_and_writes_a_run_that_detect_accepts(
    labelled_photos, shared_data, tmp_path
):
    out = tmp_path / "supervised"
    result = invoke(
        command_args(
            "pretrain",
            labelled_photos,
            out,
            *TINY,
            method="supervised",
            epochs=6,
            batch_size=16,
            learning_rate="3e-3",
            label_smoothing=0,
        )
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert (
        record["method"] == "supervised"
        and record["num_images"] == 48
        and record["num_validation_images"] == 12
    )
    assert len(record["class_names"]) == 3
    losses = record["history"]["loss"]
    assert losses[-1] < losses[0] - 0.1, losses
    assert set(record["history"]) >= {
        "accuracy",
        "val_loss",
        "val_accuracy",
        "feature_std",
        "feature_rank",
    }
    config = json.loads((out / "config.json").read_text())
    assert (
        config["resolved"]["method"] == "supervised" and len(config["resolved"]["class_names"]) == 3
    )
    assert "validation accuracy" in result.output
    encoder = keras.saving.load_model(out / "encoder.keras")
    assert (
        encoder.output_shape[-1] == 64
    )  # the tiny backbone's features, not the 3-class classifier
    voc = f"voc:{shared_data / 'voc2007'}"
    detect = invoke(
        command_args("detect", voc, tmp_path / "detect", "--backbone", out, *DETECT_ONE_EPOCH)
    )
    assert detect.exit_code == 0, detect.output
    assert json.loads((tmp_path / "detect" / "metrics.json").read_text())["num_test_images"] > 0
    resolved = json.loads((tmp_path / "detect" / "config.json").read_text())["resolved"]["backbone"]
    assert resolved.startswith("supervised encoder"), resolved


def test_supervised_pretraining_needs_labels(photos, tmp_path):
    result = invoke_as_user(
        command_args("pretrain", photos, tmp_path / "r", "--method", "supervised", *TINY)
    )
    assert result.exit_code == 1
    assert (
        "needs one sub-folder of images per class" in result.output
        and "Traceback" not in result.output
    )


@pytest.mark.large
def test_warmup_default_follows_the_number_of_epochs(photos, tmp_path):
    # The old default (10 warm-up epochs) refused every run shorter than 10 epochs.
    out = tmp_path / "one"
    result = invoke(
        command_args("pretrain", photos, out, "--epochs", "1", "--batch-size", "16", *TINY)
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["warmup_epochs"] is None
    assert config["resolved"]["warmup_epochs"] == pytest.approx(0.1)
    bad = invoke_as_user(
        command_args("pretrain", photos, tmp_path / "two", *TINY, epochs=2, warmup_epochs=3)
    )
    assert bad.exit_code == 1 and "--warmup-epochs must be in [0, epochs=2]" in bad.output


@pytest.mark.large
def test_simclr_reaches_contrastive_accuracy_well_above_chance(photos):
    """A fixed budget on 64 real photos: 40 steps of the tiny backbone at batch 32 (chance 1/63)."""
    keras.utils.set_random_seed(0)
    source = load_image_source(str(photos), image_size=32, batch_size=32, seed=0)
    model = SimCLR(
        tiny_backbone(width=16),
        projection_head=ProjectionHead(output_dim=32, hidden_dim=64),
        augmenter=SimCLRAugmenter(seed=1, blur_sigma_range=(0.01, 0.3)),
        temperature=0.2,
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(source.stream(0), epochs=4, steps_per_epoch=10, verbose=0).history
    chance = 1 / 63
    assert history["contrastive_accuracy"][-1] > 5 * chance, history["contrastive_accuracy"]
    assert history["projection_rank"][-1] > 2.0  # and not by collapsing


def readme_pretrain_commands():
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            # The "Several GPUs or hosts" examples need several devices and a large batch (one
            # of them took 9 min here on one CPU); tests/pretraining/test_pretrain_distributed.py
            # runs `--distribute mirrored` end to end on 2 logical devices instead.
            if line.startswith("ssl-keras pretrain") and "--distribute" not in line:
                commands.append(line)
    return commands


def test_readme_lists_pretrain_commands():
    commands = readme_pretrain_commands()
    assert len(commands) >= 3 and any("--method supervised" in c for c in commands), commands


@pytest.mark.large
def test_every_readme_pretrain_command_runs_as_written(shared_data, tmp_path):
    """Each README command, with paths moved into tmp, one step per epoch and 1/8 of the epochs.

    `../shared/data/unlabeled` becomes a copy of 160 of its photos with their manifest rows (10
    classes x 8 train + 8 val), and `--epochs N` becomes `ceil(N / 8)`, which keeps an extension
    (16 then 20) an extension (2 then 3). As written (52 EfficientNetB1 epochs, each with a
    checkpoint and a probe of 1,000 photos) the commands took 9 of the suite's 31 minutes.
    """
    data = tmp_path / "data"
    manifest_subset(shared_data, data / "unlabeled", 10, train=8, val=8)
    for command in readme_pretrain_commands():
        args = shlex.split(command)[1:]
        args = [a.replace("../shared/data", str(data)) for a in args]
        args = [
            str(math.ceil(int(a) / 8)) if i and args[i - 1] == "--epochs" else a
            for i, a in enumerate(args)
        ]
        args = [str(tmp_path / a) if a.startswith("runs/") else a for a in args]
        result = invoke([*args, "--steps-per-epoch", "1", "--quiet", "--no-export"])
        assert result.exit_code == 0, (command, result.output)
        assert "pretrain done" in result.output, (command, result.output)


@pytest.mark.large
def test_supervised_pretraining_resumes_with_more_epochs(labelled_photos, tmp_path):
    out = tmp_path / "supervised"
    args = command_args("pretrain", labelled_photos, out, *TINY, method="supervised", batch_size=16)
    assert invoke([*args, "--epochs", "1"]).exit_code == 0
    result = invoke(resume_args("pretrain", out, epochs=2, quiet=True))
    assert result.exit_code == 0, result.output
    assert "resuming from" in result.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 2 and record["method"] == "supervised"
    assert len(record["history"]["val_accuracy"]) == 1  # this call trained the second epoch only
