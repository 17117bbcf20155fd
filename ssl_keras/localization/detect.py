"""`run_detect`, `evaluate_run`, `predict_images`: transfer a backbone to single-object localization.

Run directory layout:

```
DIR/config.json        resolved options, seeds, environment, data description
DIR/train_ids.json     the labelled training subset (image ids), for --label-fraction
DIR/baselines.json     the trivial baselines fitted on the labelled train subset: the best
                       constant box (prior_box) and the class frequency ranking (majority_class)
DIR/metrics.json       test metrics: mean_iou, loc_acc@0.5, loc_acc@0.7, top1, top3,
                       balanced_top1, cls_loc_acc@0.5, num_test_images, skipped, per_class; the
                       baselines scored on the same images and the model's margins over them;
                       selected_epoch (model selection on val)
DIR/best.weights.h5    weights of the epoch with the best val mean IoU (best_epoch.json says which)
DIR/model.keras        the trained BoxRegressor (the selected epoch's weights)
DIR/savedmodel/        serve(images [N,H,W,3] float in [0,255]) -> {"boxes", "class_probs"}
DIR/model.onnx         the same endpoint in ONNX (with --export-onnx; the onnx extra)
DIR/checkpoints/       per-epoch checkpoints for --resume
DIR/logs/              TensorBoard: losses, metrics, learning rate, predicted vs true boxes
```
"""

import os
import time

import keras
import numpy as np

from ssl_keras.data.image_files import scan_progress
from ssl_keras.backbone import resolve_backbone, set_batch_norm_momentum
from ssl_keras.localization.box_augmenter import BoxAugmenter
from ssl_keras.localization.box_baselines import fit_baselines, margins, score_baselines
from ssl_keras.localization.box_drawing import PRED_COLOR, TRUE_COLOR, draw_boxes
from ssl_keras.localization.box_metrics import format_per_class_table, localization_report
from ssl_keras.localization.box_regressor import BoxRegressor, balanced_class_weights
from ssl_keras.runs.distribution import prepare_model, set_up_devices
from ssl_keras.runs.callbacks import (
    BestEpoch,
    ImageSummary,
    LearningRateLogger,
    image_grid,
    read_best_epoch,
)
from ssl_keras.runs.config import ConfigError, DetectConfig, to_dict
from ssl_keras.data.feature_cache import backbone_outputs, cached_dataset, cached_train_stream
from ssl_keras.data.localization import (
    LabelCountError,
    boxes_to_original,
    load_localization_data,
)
from ssl_keras.runs.export import ExportError, export_onnx, export_serving
from ssl_keras.optimizers import BackboneAdamW, WarmupCosineDecay
from ssl_keras.runs.run_directory import (
    read_json,
    resolved_jit_compile,
    save_model_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ssl_keras.runs.resumable import StopRequest, fit_resumable, load_checkpoint, stop_on_signals
from ssl_keras.runs.run_skeleton import start_run


BEST_WEIGHTS = "best.weights.h5"
BEST_RECORD = "best_epoch.json"


def resolve_seeds(seed):
    """Seeds of every random source, derived from the run seed and stored in config.json.

    `data` drives both the labelled subset (class-stratified) and the training-set shuffle.
    """
    return {"global": seed, "augmenter": seed + 1, "data": seed + 2}


def _load_data(options, seeds, data_spec=None, splits=("train", "val", "test")):
    """The run's localization data (`data_spec` overrides its source), reading only `splits`."""
    spec = data_spec or options["data"]
    try:
        return load_localization_data(
            spec,
            image_size=options["image_size"],
            batch_size=options["batch_size"],
            seed=seeds["data"],
            label_fraction=options["label_fraction"],
            num_labeled=options["num_labeled"],
            resize=options["resize"],
            splits=splits,
            drop_split_overlap=options.get("drop_split_overlap", False),
        )
    except LabelCountError as error:
        raise ConfigError(
            f"--num-labeled must be in [1, {error.available}]: the train split of {spec} has "
            f"{error.available} usable images; got {error.num} (or use --label-fraction)"
        ) from None


def _phase_optimizer(config, steps, finetune):
    schedule = WarmupCosineDecay(
        config.learning_rate, total_steps=max(steps, 1), warmup_steps=0, final_fraction=0.05
    )
    optimizer = BackboneAdamW(
        backbone_lr_multiplier=config.backbone_lr_multiplier if finetune else 1.0,
        learning_rate=schedule,
        weight_decay=config.weight_decay,
    )
    return optimizer


def enter_phase(model, config, *, finetune, epochs, steps_per_epoch):
    """Freezes or unfreezes the backbone and compiles `model` with the phase's optimizer and schedule."""
    # Frozen: Keras runs a non-trainable BatchNormalization in inference mode as well.
    model.backbone.trainable = finetune
    if finetune and config.bn_momentum is not None:
        set_batch_norm_momentum(model.backbone, config.bn_momentum)
    model.compile(
        optimizer=_phase_optimizer(config, epochs * steps_per_epoch, finetune),
        jit_compile=resolved_jit_compile(),
    )


def _with_box_inputs(dataset, augment):
    if not augment:
        return dataset
    return dataset.map(
        lambda image, targets: ({"images": image, "boxes": targets["boxes"]}, targets)
    )


def _train_stream(data, augment):
    """`start_batch -> dataset` of the training split, resumable at any batch (see `runs/resumable.py`)."""
    if getattr(data, "train_stream", None) is not None:
        return lambda start_batch: _with_box_inputs(data.train_stream(start_batch), augment)
    # TFDS: tf.data's shuffle order restarts with the process.
    return lambda start_batch: _with_box_inputs(data.train, augment).repeat()


def _flat_counts(by_split):
    total = {}
    for reasons in by_split.values():
        for reason, count in reasons.items():
            total[reason] = total.get(reason, 0) + count
    return dict(sorted(total.items()))


def data_report(data):
    """What the data loader left out or repaired: totals, per split, and one line per file."""
    skipped_by_split = {split: dict(reasons) for split, reasons in data.skipped.items()}
    repaired_by_split = {
        split: dict(reasons) for split, reasons in getattr(data, "repaired", {}).items()
    }
    return {
        "skipped": _flat_counts(skipped_by_split),
        "skipped_by_split": skipped_by_split,
        "repaired": _flat_counts(repaired_by_split),
        "repaired_by_split": repaired_by_split,
        "data_messages": list(getattr(data, "messages", [])),
        "split_overlap": dict(getattr(data, "split_overlap", {})),
    }


def predict_dataset(model, dataset):
    """Runs the model in inference mode over `(images, targets)` batches; returns NumPy arrays."""
    boxes, probs, true_boxes, labels = [], [], [], []
    for images, targets in dataset:
        out = model(images, training=False)
        boxes.append(keras.ops.convert_to_numpy(out["boxes"]))
        probs.append(keras.ops.convert_to_numpy(keras.ops.softmax(out["class_logits"], axis=-1)))
        true_boxes.append(np.asarray(targets["boxes"]))
        labels.append(np.asarray(targets["labels"]))
    return {
        "pred_boxes": np.concatenate(boxes),
        "class_probs": np.concatenate(probs),
        "true_boxes": np.concatenate(true_boxes),
        "labels": np.concatenate(labels),
    }


def _box_grid(images, targets, class_names):
    def make(model):
        out = model(images, training=False)
        pred = keras.ops.convert_to_numpy(out["boxes"])
        cls = np.argmax(keras.ops.convert_to_numpy(out["class_logits"]), axis=-1)
        drawn = [
            draw_boxes(
                img,
                np.stack([t, p]),
                captions=["", class_names[c]],
                colors=[TRUE_COLOR, PRED_COLOR],
            )
            for img, t, p, c in zip(images, targets, pred, cls)
        ]
        return image_grid([drawn])

    return make


def _test_metrics(model, data, split, baselines=None):
    """Metrics of one split, with boxes mapped back to each original image's normalised frame.

    IoU is invariant under the stretch resize but not under letterbox, so both the target and
    the predicted box are mapped to the original frame before comparing them. With
    `baselines` (`fit_baselines`'s dict), the report also holds them scored on the same
    images (`baselines`) and the model's lead over them (`margins`).
    """
    if split == "train":
        raise ValueError(
            "metrics are computed on val or test (the train split is shuffled and subset)"
        )
    arrays = predict_dataset(model, getattr(data, split))
    original_hw = np.asarray(data.original_hw[split])
    to_original = lambda boxes: boxes_to_original(
        boxes, original_hw, data.image_size, data.resize_policy
    )
    true_boxes = to_original(arrays["true_boxes"])
    report = localization_report(
        true_boxes,
        to_original(arrays["pred_boxes"]),
        arrays["labels"],
        arrays["class_probs"],
        data.class_names,
    )
    report["split"] = split
    if baselines is not None:
        report["baselines"] = score_baselines(
            baselines, true_boxes, arrays["labels"], list(data.class_names)
        )
        report["margins"] = margins(report, report["baselines"])
    report.update(data_report(data))
    return report


def _feature_caches(model, data, config, seeds, steps_per_epoch, log):
    """The frozen backbone's outputs for the training images (and flips) and val, computed once.

    The training rows are read in the order of the image stream's table (`shuffle=False`), so
    the cached stream with the same seed visits them in the same order as the image stream.
    """
    started = time.perf_counter()
    model.backbone.trainable = False
    if getattr(data, "train_stream", None) is not None:
        rows = data.train_stream(0, shuffle=False).take(steps_per_epoch)
    else:
        rows = data.train
    train = backbone_outputs(model.backbone, rows, flip=config.augment)
    val = backbone_outputs(model.backbone, data.val)
    log(
        f"cached the frozen backbone's features of {len(train['labels'])} training images"
        + (" and their flips" if config.augment else "")
        + f" and {len(val['labels'])} val images "
        f"in {time.perf_counter() - started:.0f} s (shape {list(train['features'].shape[1:])})"
    )
    stream = cached_train_stream(
        train,
        batch_size=config.batch_size,
        seed=seeds["data"],
        flip_seed=seeds["augmenter"] if config.augment else None,
    )
    return stream, cached_dataset(val, batch_size=config.batch_size)


def _new_model(config, backbone, data, seeds):
    """A new `BoxRegressor` on `backbone`, with the augmenter and class weights the options ask for."""
    class_names = list(data.class_names)
    train_labels = data.targets["train"]["labels"]
    augmenter = BoxAugmenter(seed=seeds["augmenter"]) if config.augment else None
    class_weights = (
        balanced_class_weights(train_labels, len(class_names))
        if config.class_balance == "weight"
        else None
    )
    return BoxRegressor(
        backbone,
        num_classes=len(class_names),
        head=config.head,
        augmenter=augmenter,
        hidden_units=config.hidden_units,
        dropout=config.dropout,
        spatial_channels=config.spatial_channels,
        box_weight=config.box_weight,
        giou_weight=config.giou_weight,
        l1_weight=config.l1_weight,
        class_weight=config.class_weight,
        class_weights=class_weights,
    )


def _callbacks(config, data, out):
    """Learning rate, TensorBoard, the val box grid and (with best-val selection) the best epoch's weights."""
    sample_images, sample_targets = next(iter(data.val.take(1)))
    logs_dir = os.path.join(out, "logs")
    callbacks = [
        LearningRateLogger(),
        keras.callbacks.TensorBoard(logs_dir, update_freq="epoch", write_graph=False),
        ImageSummary(
            logs_dir,
            "val_true_green_vs_predicted_red",
            _box_grid(
                np.asarray(sample_images)[:6],
                np.asarray(sample_targets["boxes"])[:6],
                data.class_names,
            ),
        ),
    ]
    if config.model_selection == "best-val":
        callbacks.append(
            BestEpoch(
                os.path.join(out, BEST_WEIGHTS),
                os.path.join(out, BEST_RECORD),
                monitor="val_mean_iou",
            )
        )
    return callbacks


def _fit_phases(model, config, data, run, *, callbacks, steps_per_epoch, head_epochs, verbose):
    """Trains the head (backbone frozen), then fine-tunes, from the run's resume point; returns the history.

    A phase resumed inside itself keeps the optimizer restored from the checkpoint; one entered
    anew is compiled with its own schedule. The head phase reads cached backbone features with
    `--cache-features`.
    """
    image_stream = _train_stream(data, config.augment)
    image_val = _with_box_inputs(data.val, config.augment)
    history = {}
    epoch, step = run.start
    if step >= steps_per_epoch:
        epoch, step = epoch + 1, 0
    request = StopRequest()
    with stop_on_signals(request):
        for finetune, start, end in [(False, 0, head_epochs), (True, head_epochs, config.epochs)]:
            if end <= start or epoch >= end:
                continue
            if not (run.state and (epoch > start or step > 0)):  # not resumed inside this phase
                enter_phase(
                    model,
                    config,
                    finetune=finetune,
                    epochs=end - start,
                    steps_per_epoch=steps_per_epoch,
                )
            cached = not finetune and config.cache_features
            if cached:
                stream, val = _feature_caches(
                    model, data, config, run.seeds, steps_per_epoch, run.log
                )
            else:
                stream, val = image_stream, image_val
            run.log(
                f"{'fine-tuning' if finetune else 'training the head (backbone frozen)'}: epochs {epoch + 1}-{end}"
                + (" on cached features" if cached else "")
            )
            ran = fit_resumable(
                model,
                stream,
                epochs=end,
                steps_per_epoch=steps_per_epoch,
                checkpoints=run.checkpoints,
                start=(epoch, step),
                callbacks=callbacks,
                stop_request=request,
                validation_data=val,
                verbose=verbose,
            )
            for key, values in ran.items():
                history.setdefault(key, []).extend(values)
            epoch, step = end, 0
    return history


def _select_epoch(model, config, out):
    """Loads the best val epoch's weights into `model` (best-val selection); returns the selection record."""
    selection = {"model_selection": config.model_selection, "selected_epoch": config.epochs}
    record = (
        read_best_epoch(os.path.join(out, BEST_RECORD))
        if config.model_selection == "best-val"
        else None
    )
    if record is not None:
        model.load_weights(os.path.join(out, BEST_WEIGHTS))
        selection.update(selected_epoch=record["epoch"], selected_val_mean_iou=record["value"])
    return selection


def _save_model(model, out, config, log):
    """Saves model.keras, the SavedModel (`config.export`) and model.onnx (`config.export_onnx`).

    Returns the paths of the SavedModel and model.onnx (None for one skipped). A failed ONNX
    conversion is logged: the trained model is saved by then.
    """
    save_model_atomic(model, os.path.join(out, "model.keras"))
    exported = onnx_path = None
    if config.export:
        try:
            exported = export_detector(model, os.path.join(out, "savedmodel"))
        except ExportError as error:
            log(f"SavedModel export skipped: {error}")
    if config.export_onnx:
        try:
            onnx_path = export_detector_onnx(
                model, os.path.join(out, "model.onnx"), savedmodel=exported
            )
        except Exception as error:  # tf2onnx raises many kinds; model.keras is already saved
            log(f"ONNX export failed, model.keras is saved: {type(error).__name__}: {error}")
    return exported, onnx_path


def run_detect(config: DetectConfig, *, verbose=1, log=print, resume_hint=None):
    """Trains (or resumes) a `BoxRegressor` and writes the run directory.

    Args:
        config: a validated `DetectConfig`.
        verbose: Keras progress-bar verbosity. Defaults to 1.
        log: function receiving one-line messages. Defaults to `print`.
        resume_hint: str, how to continue after an interruption, for the message. Defaults to
            the `ssl-keras detect --resume` command.

    Returns:
        metrics.json's dict, plus `wall_seconds`, `peak_memory_mb` (also in timing.json) and
        `outputs`.

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint was written.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    devices = set_up_devices(config, log)  # before any TensorFlow op (multi-worker)
    with (
        start_run(config, command="detect", resolve_seeds=resolve_seeds, log=log) as run,
        scan_progress(verbose > 0),
    ):
        return _detect(run, config, devices, verbose=verbose, log=log, resume_hint=resume_hint)


def _detect(run, config, devices, *, verbose, log, resume_hint):
    """The steps of `run_detect` in its started `run`, which holds the directory's lock."""
    data = _load_data(to_dict(config), run.seeds)
    devices.check_first_batch(data.num_images["val"], config.batch_size, "val")
    _log_data_report(data_report(data), log)
    if run.state:
        # The checkpoint holds the backbone; building it again would only cost time.
        backbone, backbone_description = None, run.recorded["resolved"]["backbone"]
    else:
        with devices.scope():  # a strategy's variables are created inside its scope
            backbone, backbone_description = resolve_backbone(config)
    head_epochs, steps_per_epoch, baselines = _record_run(
        run, config, data, backbone_description, devices
    )
    with devices.scope():
        model = load_checkpoint(run.state) if run.log_resume(config.epochs) else None
        model = model or _new_model(config, backbone, data, run.seeds)
        prepare_model(model.backbone, config, devices)  # the heads have no BatchNorm
    with (
        run.hints(
            resume=resume_hint,
            nonfinite="start a new run with a lower --learning-rate "
            f"(this one used {config.learning_rate:g})",
        ),
        devices.scope(),
    ):
        history = _fit_phases(
            model,
            config,
            data,
            run,
            callbacks=_callbacks(config, data, run.out),
            steps_per_epoch=steps_per_epoch,
            head_epochs=head_epochs,
            verbose=verbose,
        )
    selection = _select_epoch(model, config, run.out)
    exported, onnx_path = _save_model(model, run.out, config, log)

    metrics = _test_metrics(model, data, "test", baselines)
    metrics.update(selection)
    metrics.update(
        {
            "backbone": backbone_description,
            "mode": config.mode,
            "num_train_images": len(data.train_ids),
            "epochs": config.epochs,
            "history": history,
            "distribution": devices.describe(config.batch_size),
        }
    )
    _write_metrics(run, metrics, exported, onnx_path)
    return metrics


def _record_run(run, config, data, backbone_description, devices):
    """Writes config.json (with what was resolved), train_ids.json and baselines.json.

    Returns:
        `(head_epochs, steps_per_epoch, baselines)`.
    """
    head_epochs = config.resolved_head_epochs()
    steps_per_epoch = -(-len(data.train_ids) // config.batch_size)
    run.write_config(
        {
            "backbone": backbone_description,
            "head_epochs": head_epochs,
            "finetune_epochs": config.epochs - head_epochs,
            "steps_per_epoch": steps_per_epoch,
            "data": data.description,
            "num_images": data.num_images,
            "class_names": list(data.class_names),
            "resize": config.resize,
            "jit_compile": resolved_jit_compile(),
            **devices.describe(config.batch_size),
        }
    )
    write_json_atomic(os.path.join(run.out, "train_ids.json"), {"train_ids": list(data.train_ids)})
    train_targets = data.targets["train"]
    baselines = fit_baselines(
        train_targets["boxes"], train_targets["labels"], list(data.class_names)
    )
    write_json_atomic(os.path.join(run.out, "baselines.json"), baselines)

    return head_epochs, steps_per_epoch, baselines


def _write_metrics(run, metrics, exported, onnx_path):
    """Writes metrics.json, per_class.md and timing.json; adds the timing and `outputs` to `metrics`."""
    # metrics.json holds only what the seed determines, so two runs can be compared bitwise;
    # time and memory go to timing.json.
    write_json_atomic(os.path.join(run.out, "metrics.json"), metrics)
    write_text_atomic(os.path.join(run.out, "per_class.md"), format_per_class_table(metrics))
    metrics.update(run.write_timing())
    metrics["outputs"] = {
        "model": os.path.join(run.out, "model.keras"),
        "savedmodel": exported,
        "onnx": onnx_path,
        "logs": os.path.join(run.out, "logs"),
        "metrics": os.path.join(run.out, "metrics.json"),
    }


def _log_data_report(report, log, *, limit=20):
    """Logs, once, what the loader skipped and repaired, with up to `limit` file lines."""
    for key, verb in (("skipped", "skipped"), ("repaired", "read after a repair")):
        if report[key]:
            log(
                f"{verb}: "
                + ", ".join(f"{reason}: {count}" for reason, count in report[key].items())
            )
    messages = report["data_messages"]
    for message in messages[:limit]:
        log(f"  {message}")
    if len(messages) > limit:
        log(f"  ... and {len(messages) - limit} more (all in metrics.json, data_messages)")


def detector_serving(model):
    """The detector's endpoint: images to {"boxes": [N, 4] rel_yxyx, "class_probs": [N, C]}.

    Images are float [N, H, W, 3] in [0, 255], resized by the caller exactly as in training
    (the run's `resize` policy and `image_size`); the model runs in inference mode.
    """

    def serve(images):
        out = model(images, training=False)
        return {
            "boxes": out["boxes"],
            "class_probs": keras.ops.softmax(out["class_logits"], axis=-1),
        }

    return serve


def export_detector(model, path):
    """SavedModel whose `serve(images)` is `detector_serving(model)`."""
    return export_serving(path, model, detector_serving(model))


def export_detector_onnx(model, path, *, savedmodel=None):
    """ONNX file of `detector_serving(model)`: input `images`, outputs `boxes` and `class_probs`.

    `savedmodel`: None, or this model's SavedModel from `export_detector`, converted instead of
    writing a temporary one. Needs the `onnx` extra.
    """
    return export_onnx(path, model, detector_serving(model), savedmodel=savedmodel)


def load_run(run_dir):
    """Loads a detect run's model and config record."""
    record_path = os.path.join(run_dir, "config.json")
    model_path = os.path.join(run_dir, "model.keras")
    for path in (record_path, model_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"--model {run_dir}: {os.path.basename(path)} is missing; is it a finished detect run?"
            )
    return keras.saving.load_model(model_path), read_json(record_path)


def evaluate_run(run_dir, *, data=None, split="test"):
    """Recomputes the metrics of a saved detect run on `split` of `data` (default: the run's data).

    Only `split` is read, so `data` may be a VOC folder with just that image set (e.g. only
    `ImageSets/Main/test.txt`); the report's `skipped`/`repaired` counts are of that split.

    Args:
        run_dir: str, a finished detect run directory.
        data: str or None, a source spec replacing the run's own `--data`. Defaults to None.
        split: str, `"val"` or `"test"`. Defaults to `"test"`.

    Returns:
        The metrics dict, as in the run's metrics.json, with the baselines fitted on the run's
        own labelled train subset (its `baselines.json`) scored on the same images.
    """
    model, record = load_run(run_dir)
    baselines_path = os.path.join(run_dir, "baselines.json")
    baselines = read_json(baselines_path) if os.path.isfile(baselines_path) else None
    # The other splits are not needed for metrics, and may not exist in `data`.
    data = _load_data(record["options"], record["seeds"], data, splits=(split,))
    return _test_metrics(model, data, split, baselines)
