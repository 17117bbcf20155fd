"""The `ssl-keras` command line: thin click wrappers over the library.

Each command builds a config dataclass, calls one library function, and turns expected user
errors into `click.ClickException` (one line, exit code 1, no traceback).
"""

import datetime
import functools
import os
import re
import signal
import sys

import click

from ssl_keras import quiet_startup
from ssl_keras.cli.options import (
    config_command_options,
    image_inputs_and_out,
    positive_int_option,
    run_dir_option,
)
from ssl_keras.compare.compare_config import CompareConfig
from ssl_keras.runs.config import DetectConfig, PretrainConfig, ProbeConfig, build_config, to_dict

PRETRAIN_HELP = {
    "data": "Image source: a folder of images, voc:PATH[:SPLIT], tfds:NAME[:SPLIT] or synthetic[:N].",
    "out": "Run directory (must be new or empty, unless --resume).",
    "method": (
        "simclr (unlabeled images) or supervised (labelled images: a manifest.csv, or folder:PATH with "
        "one sub-folder per class; the ImageNet stand-in)."
    ),
    "backbone": "keras.applications backbone name (or 'tiny' for smoke tests).",
    "backbone_weights": "Initial backbone weights: 'imagenet' or a local weights file.",
    "drop_connect_rate": "Stochastic-depth rate of the last block (0: off; Keras EfficientNet builds 0.2).",
    "zero_init_residual": (
        "Start every residual block as the identity (BN gamma 0 at the end of each branch); "
        "default: on from random init, off with --backbone-weights."
    ),
    "bn_momentum": "Momentum of the backbone's BatchNorm moving statistics (Keras: 0.99; SimCLR: 0.9).",
    "epochs": "Number of epochs (>= 1).",
    "batch_size": "Images per batch; each gives two views (>= 2).",
    "image_size": "Square side images are resized to (>= 32).",
    "temperature": "NT-Xent temperature (> 0).",
    "projection_dim": "Output size of the projection head.",
    "projection_hidden_dim": "Hidden width of the projection head (default: encoder width).",
    "projection_layers": "Dense layers in the projection head.",
    "optimizer": "auto (AdamW below batch 1024, else LARS), adamw, lars or lamb.",
    "learning_rate": "Peak learning rate (default: scaled with batch size per optimizer).",
    "weight_decay": "Weight decay (default per optimizer; never on biases or BatchNorm).",
    "warmup_epochs": "Linear warm-up length in epochs, then cosine decay (default: a tenth of --epochs).",
    "jitter_strength": "Colour-jitter strength s of the SimCLR augmentation.",
    "crop_area_min": "Smallest area fraction of the random resized crop (SimCLR: 0.08).",
    "blur_sigma_max": "Largest Gaussian-blur sigma in pixels (default: SimCLR's 2.0 at 224 px, scaled to --image-size).",
    "label_smoothing": "Label smoothing of --method supervised's cross-entropy.",
    "steps_per_epoch": "Steps per epoch (default: one pass over the data).",
    "seed": "Run seed; all other seeds are derived from it and saved in config.json.",
    "resume": "Continue the run in --out from its last checkpoint.",
    "mixed_precision": "Same as --precision mixed_float16 (kept for old config files).",
    "precision": "float32, mixed_float16 or mixed_bfloat16 (the loss is computed in float32).",
    "distribute": "auto (from the visible devices), none, mirrored or multi-worker (TensorFlow), "
    "data-parallel (JAX); --batch-size is the global batch.",
    "sync_bn": "BatchNorm statistics over all replicas (default: on when distributed).",
    "export": "Write encoder_savedmodel/ (TensorFlow backend only).",
    "export_onnx": "Also write encoder.onnx (TensorFlow backend; pip install 'ssl_keras[onnx]').",
    "probe_data": "Labelled data for a kNN probe of the encoder during training (voc:PATH, a manifest, folder:PATH).",
    "probe_every": "Run the probe every N epochs (logged as probe_top1/probe_top3).",
    "probe_max_per_class": "Images per class used by the probe (train and test each).",
}


DETECT_HELP = {
    "data": "Localization data: voc:PATH (VOCdevkit year folder), tfds:voc/2007, tfds:voc/2012 or synthetic[:N].",
    "backbone": "Pretrain run directory (or ssl:DIR), an encoder.keras file, 'imagenet' or 'scratch'.",
    "backbone_name": "keras.applications architecture for 'imagenet', 'scratch' and --backbone-weights.",
    "backbone_weights": "Local weights file (e.g. efficientnetb1_notop.h5) to start the backbone from.",
    "out": "Run directory (must be new or empty, unless --resume).",
    "mode": "freeze (backbone frozen), finetune (all trainable) or freeze-then-finetune.",
    "label_fraction": "Fraction of the train split used as labels, class-stratified, in (0, 1].",
    "num_labeled": "Number of labelled training images (overrides --label-fraction).",
    "epochs": "Total epochs (head warm-up + fine-tuning).",
    "head_epochs": "Epochs with the backbone frozen in freeze-then-finetune (default: a third).",
    "image_size": "Square input side (>= 32).",
    "batch_size": "Images per batch.",
    "learning_rate": "Peak learning rate of the head (cosine decay per phase).",
    "backbone_lr_multiplier": "Backbone learning rate as a fraction of the head's when fine-tuning.",
    "bn_momentum": "BatchNorm moving-average momentum while fine-tuning (Keras's is 0.99, which lags).",
    "weight_decay": "AdamW weight decay (not on biases or BatchNorm).",
    "head": "spatial (soft argmax over the feature map's cells: sees where the object is) or pooled "
    "(box from globally pooled features).",
    "spatial_channels": "Width of the spatial head's 1x1 reduction.",
    "hidden_units": "Width of the head's hidden layer (0 for none).",
    "dropout": "Dropout in the head.",
    "cache_features": "With the backbone frozen, compute its features once per image (and flipped image) and "
    "train the head on them; augmentation is then flips only.",
    "class_balance": "none, or weight: cross-entropy weighted N/(K*n_c) per class, so rare classes count.",
    "model_selection": "best-val: keep the epoch with the best val mean IoU (recorded in metrics.json); "
    "last: the final epoch.",
    "box_weight": "Weight of the box loss (GIoU + L1).",
    "giou_weight": "Weight of GIoU inside the box loss.",
    "l1_weight": "Weight of L1 inside the box loss.",
    "class_weight": "Weight of the classification cross-entropy.",
    "resize": "stretch (to a square) or letterbox (keep aspect, pad); same for training and evaluation.",
    "augment": "Box-aware flip and scale/translate jitter on the training split.",
    "drop_split_overlap": "Drop train ids also listed in val.txt or test.txt (VOC split leakage; counted either way).",
    "seed": "Run seed; derived seeds are saved in config.json.",
    "resume": "Continue the run in --out from its last checkpoint.",
    "distribute": "auto (from the visible devices), none, mirrored or multi-worker (TensorFlow), "
    "data-parallel (JAX); --batch-size is the global batch.",
    "sync_bn": "BatchNorm statistics over all replicas (default: on when distributed).",
    "export": "Write savedmodel/ (TensorFlow backend only).",
    "export_onnx": "Also write model.onnx (TensorFlow backend; pip install 'ssl_keras[onnx]').",
}


USER_ERRORS = (
    ("ssl_keras.backbone", "BackboneWeightsError"),
    ("ssl_keras.runs.config", "ConfigError"),
    ("ssl_keras.data.source_spec", "SourceError"),
    ("ssl_keras.runs.export", "ExportError"),
    ("ssl_keras.runs.run_directory", "RunDirectoryError"),
    ("ssl_keras.localization.predict", "UnreadableImageError"),
    ("ssl_keras.gradcam.gradcam", "GradCAMError"),
    ("ssl_keras.runs.resumable", "NonFiniteLossError"),
)
"""`(module, class)` of the library's errors for user mistakes, shown as one line."""


def _user_errors():
    # A module that is not imported raised nothing: looking its error up must not import it
    # (a config error stops before TensorFlow is imported, and stays instant).
    found = [
        getattr(sys.modules[module], name) for module, name in USER_ERRORS if module in sys.modules
    ]
    return (FileNotFoundError, FileExistsError, *found)


INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT
"""Exit code after SIGINT (130: 128 + 2, the shell convention); after SIGTERM it is 143."""
STOPPED_BY = re.compile(r"\bstopped by (SIG[A-Z]+)\b")
"""How `TrainingInterrupted` and the parallel runner's `KeyboardInterrupt` name the signal."""


def interrupted_exit_code(error):
    """128 + the number of the signal that stopped this process: 130 for SIGINT, 143 for SIGTERM.

    An error names its signal with a `signal_name`, or in its message ("stopped by SIGTERM at
    epoch 2 ..."). The first one in time counts: the end of `error`'s `__context__` chain. A
    worker that the parallel runner stopped with SIGTERM after this process got a SIGINT
    reports SIGTERM, but the runner raises its error while handling the SIGINT, so the SIGINT
    is found first. Nothing named (a plain Ctrl-C) is SIGINT.
    """
    name, seen = "SIGINT", set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        match = STOPPED_BY.search(str(error))
        found = getattr(error, "signal_name", None) or (match.group(1) if match else None)
        name = found or name
        error = error.__context__
    try:
        return 128 + signal.Signals[name]
    except KeyError:
        return INTERRUPTED_EXIT_CODE


def user_errors_as_click(command):
    """Reports the library's expected errors as one line instead of a traceback.

    A training command stopped by SIGINT/SIGTERM prints where its checkpoint is and how to
    resume, and exits with code 130 (SIGINT) or 143 (SIGTERM); a Ctrl-C outside training exits
    the same way, saying that nothing new was saved.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _user_errors() as error:
            raise click.ClickException(str(error)) from None
        except Exception as error:
            resumable = sys.modules.get("ssl_keras.runs.resumable")
            if resumable is None or not isinstance(error, resumable.TrainingInterrupted):
                raise
            click.echo(f"Interrupted: {error}", err=True)
            raise click.exceptions.Exit(interrupted_exit_code(error)) from None
        except KeyboardInterrupt as error:
            click.echo(
                "Interrupted: stopped at once. Files already written are complete (all are written "
                "atomically); a training run continues from its last checkpoint with --resume",
                err=True,
            )
            raise click.exceptions.Exit(interrupted_exit_code(error)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ssl_keras")
@click.option(
    "--verbose",
    is_flag=True,
    help="Also show TensorFlow's C++ start-up and info log lines (hidden by default).",
)
def main(verbose):
    """ssl-keras: SimCLR pretraining on unlabeled images, transfer to object localization.

    Images are read as float RGB in [0, 255]; every run writes config.json and result JSON
    next to its checkpoints.
    """
    # Help and option errors never get here; commands import TensorFlow lazily, after this.
    if verbose:
        quiet_startup.restore_tensorflow_log_level()
    else:
        os.environ[quiet_startup.QUIET_ENV] = "1"  # worker processes inherit it
        quiet_startup.install_if_requested()


@main.command()
@config_command_options(PretrainConfig, PRETRAIN_HELP, quiet_help="No progress bar.")
@user_errors_as_click
def pretrain(config_file, quiet, **options):
    """SimCLR pretraining of a backbone on unlabeled images (or --method supervised on labelled ones).

    Example: ssl-keras pretrain --data ../shared/data/unlabeled --out runs/p1 --epochs 1
    --image-size 96 --batch-size 64
    """
    # The config is checked before the stage (and TensorFlow) is imported: a bad value is instant.
    config = build_config(PretrainConfig, config_file=config_file, **options)
    from ssl_keras.pretraining.pretrain import run_pretrain

    result = run_pretrain(config, verbose=0 if quiet else 1, log=click.echo)
    _print_pretrain_result(result)


def _print_pretrain_result(result):
    if result.get("method") == "supervised":
        accuracy = (
            f"train accuracy {result['accuracy']:.3f}, validation accuracy {result['val_accuracy']:.3f} "
            f"({len(result['class_names'])} classes)"
        )
    else:
        accuracy = (
            f"contrastive accuracy {result['contrastive_accuracy']:.3f} "
            f"(chance {result['chance_contrastive_accuracy']:.4f})"
        )
    click.echo(
        f"pretrain done: {result['epochs']} epoch(s), loss {result['loss']:.4f}, {accuracy}, "
        f"{result['images_per_second']:.1f} images/s"
    )
    collapse = result.get("collapse") or {}
    if collapse:
        click.echo("  collapse monitor: " + ", ".join(f"{k} {v:.4g}" for k, v in collapse.items()))
    for name, path in result["outputs"].items():
        if path:
            click.echo(f"  {name}: {path}")


@main.command()
@config_command_options(DetectConfig, DETECT_HELP, quiet_help="No progress bar.")
@user_errors_as_click
def detect(config_file, quiet, **options):
    """Transfer a backbone to single-object localization and measure it.

    Example: ssl-keras detect --data voc:../shared/data/voc2007 --backbone runs/p1 --out runs/d1
    --epochs 2 --image-size 128
    """
    config = build_config(DetectConfig, config_file=config_file, **options)
    from ssl_keras.localization.detect import run_detect

    metrics = run_detect(config, verbose=0 if quiet else 1, log=click.echo)
    click.echo(metrics_row(metrics, header=True))
    for name, path in metrics["outputs"].items():
        if path:
            click.echo(f"  {name}: {path}")


METRIC_KEYS = ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5")


def metrics_row(metrics, *, header=False, label=""):
    """One aligned text row of the headline metrics (with a header line if asked).

    With the baselines in `metrics`, their rows follow (a metric a baseline does not define
    is `-`), then the model's margins over them, and a warning when it does not beat them.
    """

    def cell(values, key):
        return f"{values[key]:>16.4f}" if key in values else f"{'-':>16}"

    row = (
        f"{label:<24}"
        + "".join(cell(metrics, k) for k in METRIC_KEYS)
        + f"{metrics['num_test_images']:>8d}"
    )
    lines = [row]
    if header:
        lines.insert(0, f"{'':<24}" + "".join(f"{k:>16}" for k in METRIC_KEYS) + f"{'images':>8}")
    baselines = metrics.get("baselines")
    if baselines:
        for name, values in baselines.items():
            lines.append(f"{name:<24}" + "".join(cell(values, k) for k in METRIC_KEYS))
        lines.extend(margin_lines(metrics))
    return "\n".join(lines)


def margin_lines(metrics):
    """The model's margins over the baselines, and a plain warning for each it does not beat."""
    from ssl_keras.localization.box_baselines import BOX_METRICS, CLASS_METRICS

    margins = metrics["margins"]
    box = ", ".join(f"{k} {margins[k]:+.4f}" for k in BOX_METRICS)
    cls = ", ".join(f"{k} {margins[k]:+.4f}" for k in CLASS_METRICS if k in margins)
    lines = [f"margin over prior_box: {box}", f"margin over majority_class: {cls}"]
    if margins["mean_iou"] <= 0 or margins["loc_acc@0.5"] <= 0:
        lines.append(
            "warning: the model does not beat the constant prior box on mean IoU and LocAcc@0.5; "
            "its boxes are no better than one that never looks at the image"
        )
    if margins["top1"] <= 0:
        lines.append(
            "warning: top-1 is not above always predicting the most frequent training class"
        )
    return lines


@main.command()
@run_dir_option()
@click.option("--data", default=None, help="Data source [default: the run's own --data].")
@click.option("--split", default="test", show_default=True, type=click.Choice(["val", "test"]))
@click.option(
    "--out",
    "out_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Also write the metrics to this JSON file (must not exist).",
)
@user_errors_as_click
def evaluate(run_dir, data, split, out_file):
    """Recompute the metrics of a saved detect run (same numbers as its metrics.json)."""
    from ssl_keras.localization.box_metrics import format_per_class_table
    from ssl_keras.localization.detect import evaluate_run
    from ssl_keras.runs.run_directory import write_json_atomic

    if out_file and os.path.exists(out_file):
        raise click.ClickException(
            f"--out {out_file} exists; choose a new file (nothing was overwritten)"
        )
    report = evaluate_run(run_dir, data=data, split=split)
    click.echo(metrics_row(report, header=True, label=split))
    click.echo(format_per_class_table(report))
    if out_file:
        write_json_atomic(out_file, report)


@main.command()
@run_dir_option()
@image_inputs_and_out("Folder for the drawn PNGs and predictions.json.")
@user_errors_as_click
def predict(run_dir, images, out):
    """Draw the predicted box, class and score on each IMAGE (a file or a folder of images).

    Unreadable images are skipped and listed; --out gets one PNG per image and predictions.json.
    """
    from ssl_keras.localization.predict import PREDICTIONS_FILE, predict_images

    result = predict_images(run_dir, images, out, log=click.echo, verbose=1)
    for row in result["predictions"]:
        click.echo(
            f"{row['image']}: {row['class']} {row['score']:.2f} box {row['box']} -> {row['output']}"
        )
    skipped = sum(result["skipped"].values())
    click.echo(
        f"{result['num_images']} image(s) drawn"
        + (f", {skipped} skipped" if skipped else "")
        + f"; {os.path.join(out, PREDICTIONS_FILE)}"
    )


COMPARE_HELP = dict(
    DETECT_HELP,
    **{
        "backbones": "Comma list of backbones: ssl:RUN_DIR, imagenet, scratch, an encoder.keras, or NAME=SPEC.",
        "label_fractions": "Comma list of label fractions in (0, 1].",
        "modes": "Comma list of modes: freeze, finetune, freeze-then-finetune.",
        "seeds": "Number of seeds per cell (0..N-1).",
        "out": "Comparison directory; running the same command again continues an interrupted grid.",
        "export": "Write a SavedModel for every cell.",
        "freeze_epochs": "Epochs of the freeze cells (default: --epochs).",
    },
)


@main.command()
@config_command_options(CompareConfig, COMPARE_HELP)
@click.option(
    "--gradcam-images",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Test images in the report's Grad-CAM grid (0: none).",
)
@positive_int_option(
    "--workers",
    "Cells trained at once, each in its own process; the results do not depend on it.",
    default=1,
)
@user_errors_as_click
def compare(config_file, gradcam_images, workers, **options):
    """Grid of detect runs: backbones x label fractions x modes x seeds, with a report.

    Example: ssl-keras compare --data voc:../shared/data/voc2007 --backbones ssl:runs/p1,scratch
    --label-fractions 0.25,1.0 --modes freeze,finetune --seeds 2 --out runs/cmp
    """
    config = build_config(CompareConfig, config_file=config_file, **options)
    from ssl_keras.compare.compare import run_compare

    hook = _gradcam_hook(config, gradcam_images) if gradcam_images else None
    summary = run_compare(config, log=click.echo, gradcam=hook, workers=workers)
    click.echo(f"report: {os.path.join(summary['out'], 'report.md')}")


def _gradcam_hook(config, num_images):
    """Grad-CAM grid over the first seed's cells of the largest label fraction, one column per model."""

    def hook(out_dir, cell_dirs):
        from ssl_keras.gradcam.gradcam import gradcam_for_report

        return gradcam_for_report(out_dir, cell_dirs, data=config.data, num_images=num_images)

    return hook


@main.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False))
@click.option(
    "--check", is_flag=True, help="Only parse and validate the file, print its grid, and exit."
)
@positive_int_option(
    "--workers",
    "Stages and cells trained at once, each in its own process [default: the file's workers, or "
    "1]; the results do not depend on it.",
)
@user_errors_as_click
def experiment(experiment_file, check, workers):
    """Runs an experiment file: pretraining stages, the comparison grid, labels saved, Grad-CAM.

    Running the same command again continues an interrupted experiment (finished stages and
    cells are kept). Example: ssl-keras experiment experiments/paper_cpu.yaml
    """
    from ssl_keras.compare.compare_config import grid_cells
    from ssl_keras.experiment.experiment import load_experiment, run_experiment

    loaded = load_experiment(experiment_file)
    cells = grid_cells(loaded.compare)
    click.echo(
        f"[experiment] {loaded.name}: pretrain stages {', '.join(loaded.pretrain) or 'none'}; "
        f"{len(cells)} detect cells ({', '.join(label for label, _ in loaded.compare.labelled_backbones())} x "
        f"{', '.join(loaded.compare.modes)} x fractions {', '.join(map(str, loaded.compare.label_fractions))} "
        f"x {loaded.compare.seeds} seeds) -> {os.path.abspath(loaded.out)}"
    )
    if check:
        return
    from ssl_keras.runs.resumable import TrainingInterrupted

    try:
        summary = run_experiment(loaded, log=click.echo, workers=workers)
    except (TrainingInterrupted, KeyboardInterrupt) as error:
        # The message of an interrupted training run already says how to continue; say it for the experiment.
        detail = (
            f"{error}. " if str(error) else "stopped at once; files already written are complete. "
        )
        click.echo(
            f"Interrupted: {detail}Continue the experiment with the same command: ssl-keras experiment "
            f"{experiment_file} (finished stages and cells are kept, an interrupted one resumes from its "
            "checkpoint)",
            err=True,
        )
        raise click.exceptions.Exit(interrupted_exit_code(error)) from None
    for line in summary["analysis"].get("headline", []):
        click.echo(line)
    click.echo(
        f"[experiment] wall time {summary['wall_seconds'] / 60:.1f} min this time, "
        f"{summary['total_wall_seconds'] / 60:.1f} min over {summary['invocations']} invocation(s)"
    )
    click.echo(f"report: {summary['analysis']['report']}")


@main.command()
@run_dir_option(
    "model_dirs",
    multiple=True,
    help="A detect run directory; repeat for a side-by-side comparison.",
)
@image_inputs_and_out("Folder for the overlays and the grid.")
@click.option(
    "--target",
    default="class",
    show_default=True,
    type=click.Choice(["class", "box"]),
    help="Explain the predicted class logit or the box output.",
)
@click.option(
    "--layer",
    "layer_name",
    default=None,
    help="Feature layer [default: the backbone's last feature map].",
)
@user_errors_as_click
def gradcam(model_dirs, images, out, target, layer_name):
    """Grad-CAM heatmaps of one or more detect runs on IMAGE files, and a side-by-side grid."""
    from ssl_keras.gradcam.gradcam import run_gradcam

    result = run_gradcam(list(model_dirs), list(images), out, target=target, layer_name=layer_name)
    click.echo(f"layers: {', '.join(result['layers'])}")
    click.echo(f"grid: {result['grid']}")


PROBE_HELP = {
    "backbone": "Pretrain run directory (ssl:DIR), encoder.keras, imagenet or scratch.",
    "data": "voc:PATH, manifest:CSV (or a folder with manifest.csv), folder:PATH (class subfolders), "
    "synthetic[:N].",
    "out": "Run directory (must be new or empty).",
    "method": "linear (logistic regression), knn (weighted kNN) or both.",
    "image_size": "Square side images are resized to (>= 32).",
    "batch_size": "Feature-extraction batch size.",
    "max_per_class": "Cap images per class (deterministic; default: all).",
    "backbone_name": "keras.applications architecture for imagenet, scratch and --backbone-weights.",
    "backbone_weights": "Local weights file to start --backbone-name from.",
    "seed": "Seed of the class-stratified split and of the linear probe.",
    "epochs": "Epochs of the linear probe.",
    "k": "Neighbours of the kNN probe.",
    "temperature": "Temperature of the kNN probe's similarity weights (> 0).",
    "estimate_bn": "Estimate the backbone's BatchNorm statistics on 512 of the probe's train images "
    "first (labels unused), e.g. for a scratch backbone whose statistics are still (0, 1).",
}


@main.command()
@config_command_options(ProbeConfig, PROBE_HELP, quiet_help="No progress bars.")
@user_errors_as_click
def probe(config_file, quiet, **options):
    """Top-1/Top-3 of a linear (or kNN) classifier on frozen backbone features."""
    config = build_config(ProbeConfig, config_file=config_file, **options)
    from ssl_keras.probing.probe import run_probe

    settings = to_dict(config)
    backbone, data, out = (settings.pop(name) for name in ("backbone", "data", "out"))
    result = run_probe(backbone, data, out, **settings, verbose=0 if quiet else 1, log=click.echo)
    click.echo(
        f"probe ({result['method']}): top1 {result['top1']:.4f}, top3 {result['top3']:.4f} "
        f"on {result['num_test']} test images -> {os.path.join(out, 'probe.json')}"
    )


@main.command()
@click.option("--out", default=None, help="Demo output folder [default: runs/demo-TIMESTAMP].")
@positive_int_option(
    "--epochs", "Pretraining epochs [default: the demo's, see ssl_keras.experiment.demo]."
)
@positive_int_option("--detect-epochs", "Epochs of the fine-tuned cells [default: the demo's].")
@click.option(
    "--backbone",
    default=None,
    help="Backbone [default: MobileNetV3Small; EfficientNetB1 is the paper's, "
    "and needs far more than the demo's budget to learn on 2 CPU cores].",
)
@positive_int_option(
    "--workers",
    "Stages and cells trained at once, each in its own process [default: 2]; the results do not "
    "depend on it.",
)
@user_errors_as_click
def demo(out, epochs, detect_epochs, backbone, workers):
    """A miniature of the paper's experiment on the embedded synthetic scenes (no network, about 8 min on 2 cores).

    SimCLR and supervised pretraining on synthetic "photos", then SSL vs supervised vs scratch,
    frozen and fine-tuned, on 25% and 100% of the labels, with the prior box, labels saved,
    Grad-CAM and a learning check. The experiment file is written to OUT/demo.yaml.
    """
    from ssl_keras.experiment.demo import run_demo

    out = out or os.path.join("runs", "demo-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    result = run_demo(
        out,
        backbone=backbone,
        pretrain_epochs=epochs,
        detect_epochs=detect_epochs,
        workers=workers,
        log=click.echo,
    )
    click.echo("\n[demo] test metrics on synthetic scenes:")
    with open(result["results_md"], encoding="utf-8") as f:
        click.echo(f.read())
    for line in result["headline"] + result["learning"]["lines"]:
        click.echo(f"[demo] {line}")
    click.echo(f"[demo] wall time {result['wall_seconds'] / 60:.1f} min")
    click.echo(f"[demo] report: {os.path.abspath(result['report'])}")
    click.echo(
        f"[demo] outputs are in {os.path.abspath(out)}; continue or rerun with: "
        f"ssl-keras experiment {os.path.join(out, 'demo.yaml')}"
    )


if __name__ == "__main__":
    main()
