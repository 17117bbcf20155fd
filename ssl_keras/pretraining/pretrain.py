"""`run_pretrain`: a complete, resumable pretraining run (SimCLR, or supervised) writing a run directory.

`method="simclr"` trains on unlabeled images; `method="supervised"` trains the same backbone as
a classifier on labelled ones (a manifest or class folders), the offline stand-in for ImageNet
weights. Both write the same run directory, so `detect --backbone DIR` takes either.

Run directory layout:

```
DIR/config.json            every resolved option, the seeds and the environment
DIR/result.json            final loss, accuracy, collapse metrics, epochs, images/s, wall time, skips
DIR/checkpoints/           epoch-NNNN.keras (+ state.json), used by --resume
DIR/logs/                  TensorBoard: loss, contrastive_accuracy, learning_rate, view pairs
DIR/encoder.keras          the backbone alone (keras.saving.load_model)
DIR/encoder_savedmodel/    serve(images [N,H,W,3] float in [0,255]) -> pooled features
DIR/encoder.onnx           the same endpoint in ONNX (with --export-onnx; the onnx extra)
```
"""

import os

import keras
import numpy as np

from ssl_keras.data.image_files import scan_progress
from ssl_keras.backbone import configure_backbone, make_backbone
from ssl_keras.runs.callbacks import ImageSummary, LearningRateLogger, Throughput, image_grid
from ssl_keras.pretraining.collapse import CollapseMonitor
from ssl_keras.runs.config import PretrainConfig
from ssl_keras.runs.distribution import prepare_model, set_up_devices
from ssl_keras.data.labelled_images import load_labelled_source
from ssl_keras.data.unlabeled_images import load_image_source, repaired_report, skipped_report
from ssl_keras.runs.export import ExportError, export_encoder, export_encoder_onnx
from ssl_keras.optimizers import (
    WarmupCosineDecay,
    build_optimizer,
    default_learning_rate,
    default_weight_decay,
    resolve_optimizer_name,
)
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.runs.run_directory import resolved_jit_compile, save_model_atomic, write_json_atomic
from ssl_keras.runs.run_skeleton import start_run
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter
from ssl_keras.pretraining.supervised import SupervisedPretrainer, supervised_augmenter
from ssl_keras.runs.resumable import checkpoint_state, fit_resumable, load_checkpoint


COLLAPSE_KEYS = ("projection_std", "projection_rank", "feature_std", "feature_rank")
"""The collapse metrics copied from the last epoch's logs into result.json (`collapse`)."""


MONITOR_IMAGES = 256
"""The collapse monitor's fixed batch: the first batch of the data, up to this many images."""


def resolve_seeds(seed):
    """Derives the seeds of every random source from the run seed, recorded in config.json."""
    return {"global": seed, "augmenter": seed + 1, "data_shuffle": seed + 2, "view_grid": seed + 3}


def build_encoder(config):
    """The backbone of a `PretrainConfig`, with its stochastic depth, residual init and BN momentum."""
    encoder = make_backbone(config.backbone, weights=config.backbone_weights)
    encoder, _ = configure_backbone(
        encoder,
        drop_connect_rate=config.drop_connect_rate,
        zero_init_residual=config.resolved_zero_init_residual(),
        bn_momentum=config.bn_momentum,
    )
    return encoder


def simclr_augmenter(config, seed):
    """The SimCLR augmenter of a `PretrainConfig` (blur sigma scaled to the image size)."""
    return SimCLRAugmenter(
        jitter_strength=config.jitter_strength,
        crop_area_min=config.crop_area_min,
        blur_sigma_range=config.resolved_blur_sigma_range(),
        seed=seed,
    )


def build_simclr(config, *, seeds):
    """Builds the (uncompiled) SimCLR model described by a `PretrainConfig`."""
    head = ProjectionHead(
        output_dim=config.projection_dim,
        hidden_dim=config.projection_hidden_dim,
        num_layers=config.projection_layers,
    )
    return SimCLR(
        build_encoder(config),
        projection_head=head,
        augmenter=simclr_augmenter(config, seeds["augmenter"]),
        temperature=config.temperature,
    )


def build_supervised(config, *, seeds, num_classes):
    """Builds the (uncompiled) supervised pretrainer described by a `PretrainConfig`."""
    return SupervisedPretrainer(
        build_encoder(config),
        num_classes=num_classes,
        augmenter=supervised_augmenter(seed=seeds["augmenter"]),
        label_smoothing=config.label_smoothing,
    )


def _view_pairs(images, augmenter_config, seed):
    """A grid image: originals, view 1 and view 2 of up to 8 images, for TensorBoard."""
    config = dict(augmenter_config, seed=seed)
    augmenter = SimCLRAugmenter.from_config(config)

    def make(_model):
        views = [keras.ops.convert_to_numpy(augmenter(images, training=True)) for _ in range(2)]
        return image_grid([list(images), list(views[0]), list(views[1])])

    return make


def _extend_schedule(model, total_steps, log):
    """A resumed run with a different --epochs stretches its cosine schedule to the new length.

    Without this, the schedule restored from the checkpoint would have decayed to zero at the
    old last step and the extra epochs would not train at all.
    """
    schedule = getattr(
        model.optimizer, "_learning_rate", None
    )  # the schedule object, not its value
    if isinstance(schedule, WarmupCosineDecay) and schedule.total_steps != total_steps:
        log(
            f"learning-rate schedule stretched from {schedule.total_steps} to {total_steps} steps for the new --epochs"
        )
        schedule.total_steps = int(total_steps)


def _open_source(config, seeds, log):
    """The training data of the run's method, with what the result records about them.

    Returns:
        `(stream, steps_per_epoch, sample_images, validation, info)`; `validation` is None for
        SimCLR; `info` holds the counts and the class names.
    """
    if config.method == "supervised":
        source = load_labelled_source(
            config.data,
            image_size=config.image_size,
            batch_size=config.batch_size,
            seed=seeds["data_shuffle"],
        )
        stream, validation = source.stream, source.validation
        sample = np.asarray(next(iter(validation.take(1)))[0])
        info = {
            "class_names": list(source.class_names),
            "num_validation_images": source.num_validation,
        }
    else:
        source = load_image_source(
            config.data,
            image_size=config.image_size,
            batch_size=config.batch_size,
            seed=seeds["data_shuffle"],
        )
        validation = None
        if source.stream is not None:
            stream = source.stream
        else:
            # TFDS sources are shuffled by tf.data, whose order restarts with the process.
            stream = lambda start_batch: source.dataset.repeat()  # noqa: E731
        sample = np.asarray(next(iter(source.dataset.take(1))))
        info = {}
    for report in (skipped_report(source.skipped_files), repaired_report(source.repaired_files)):
        if report:
            log(report)
    info.update(
        {
            "num_images": source.num_images,
            "data": source.description,
            "skipped": source.skipped,
            "skipped_files": [f"{path}: {reason}" for path, reason in source.skipped_files],
            "repaired": source.repaired,
            "repaired_files": [f"{path}: {reason}" for path, reason in source.repaired_files],
            "resumable_order": getattr(source, "stream", None) is not None,
        }
    )
    return stream, config.steps_per_epoch or source.steps_per_epoch, sample, validation, info


def _resolve_training(config):
    """The optimizer settings the options leave to defaults, resolved for this batch size and backend."""
    optimizer_name = resolve_optimizer_name(config.optimizer, config.batch_size)
    return {
        "optimizer": optimizer_name,
        "learning_rate": config.learning_rate
        or default_learning_rate(optimizer_name, config.batch_size),
        "weight_decay": (
            config.weight_decay
            if config.weight_decay is not None
            else default_weight_decay(optimizer_name)
        ),
        "warmup_epochs": config.resolved_warmup_epochs(),
        "jit_compile": resolved_jit_compile(),
    }


def _resolved_record(config, training, steps_per_epoch, data_info):
    """config.json's `resolved`: every option the run settled, and what the data turned out to be."""
    resolved = {
        "method": config.method,
        "optimizer": training["optimizer"],
        "learning_rate": training["learning_rate"],
        "weight_decay": training["weight_decay"],
        "warmup_epochs": training["warmup_epochs"],
        "zero_init_residual": config.resolved_zero_init_residual(),
        "blur_sigma_range": list(config.resolved_blur_sigma_range()),
        "steps_per_epoch": steps_per_epoch,
        "num_images": data_info["num_images"],
        "data": data_info["data"],
        "jit_compile": training["jit_compile"],
    }
    if config.method == "supervised":
        resolved["class_names"] = data_info["class_names"]
    return resolved


def _new_model(config, seeds, training, steps_per_epoch, data_info):
    """The method's model, compiled with its warmup-cosine optimizer and built for the image size."""
    if config.method == "supervised":
        model = build_supervised(config, seeds=seeds, num_classes=len(data_info["class_names"]))
    else:
        model = build_simclr(config, seeds=seeds)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = int(round(training["warmup_epochs"] * steps_per_epoch))
    model.compile(
        optimizer=build_optimizer(
            training["optimizer"],
            learning_rate=training["learning_rate"],
            total_steps=total_steps,
            warmup_steps=min(warmup_steps, total_steps),
            weight_decay=training["weight_decay"],
        ),
        jit_compile=training["jit_compile"],
    )
    model.build((None, config.image_size, config.image_size, 3))
    return model


def _callbacks(config, model, seeds, first_batch, throughput, logs_dir, log):
    """Throughput, learning rate, collapse (and probe) monitors, TensorBoard and SimCLR's view pairs."""
    callbacks = [
        throughput,
        LearningRateLogger(),
        # Before TensorBoard, so feature_std/feature_rank reach its epoch logs.
        CollapseMonitor(first_batch[:MONITOR_IMAGES], log=log),
        keras.callbacks.TensorBoard(logs_dir, update_freq="epoch", write_graph=False),
    ]
    if config.method == "simclr":
        callbacks.append(
            ImageSummary(
                logs_dir,
                "augmented_view_pairs",
                _view_pairs(first_batch[:8], model.augmenter.get_config(), seeds["view_grid"]),
            )
        )
    if config.probe_data:
        from ssl_keras.probing.probe import ProbeMonitor, probe_data

        monitor_data = probe_data(
            config.probe_data,
            image_size=config.image_size,
            batch_size=config.batch_size,
            max_per_class=config.probe_max_per_class,
            seed=seeds["global"],
        )
        # Before TensorBoard, so probe_top1/probe_top3 reach its epoch logs.
        callbacks.insert(2, ProbeMonitor(monitor_data, every=config.probe_every, method="knn"))
    return callbacks


def _save_encoder(model, out, config, log):
    """Saves encoder.keras, the SavedModel (`config.export`) and encoder.onnx (`config.export_onnx`).

    Returns the paths of the three (None for one skipped). A failed ONNX conversion is logged:
    the encoder is saved by then.
    """
    encoder_path = save_model_atomic(model.encoder, os.path.join(out, "encoder.keras"))
    exported = onnx_path = None
    if config.export:
        try:
            exported = export_encoder(model.encoder, os.path.join(out, "encoder_savedmodel"))
        except ExportError as error:
            log(f"SavedModel export skipped: {error}")
    if config.export_onnx:
        try:
            onnx_path = export_encoder_onnx(
                model.encoder, os.path.join(out, "encoder.onnx"), savedmodel=exported
            )
        except Exception as error:  # tf2onnx raises many kinds; encoder.keras is already saved
            log(f"ONNX export failed, encoder.keras is saved: {type(error).__name__}: {error}")
    return encoder_path, exported, onnx_path


def _method_result(config, logs, data_info):
    """The result's entries of the method alone: accuracies (supervised) or contrastive accuracy."""
    if config.method == "supervised":
        return {
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "class_names": data_info["class_names"],
            "num_validation_images": data_info["num_validation_images"],
        }
    return {
        "contrastive_accuracy": logs.get("contrastive_accuracy"),
        "chance_contrastive_accuracy": 1.0 / (2 * config.batch_size - 1),
    }


def _resume_or_build(config, run, training, steps_per_epoch, data_info, devices, log):
    """The checkpoint to continue from, or a new model; BN synchronized across replicas if asked."""
    if run.log_resume(config.epochs):
        if not data_info["resumable_order"]:
            log(
                "note: this source's shuffle order is not restored on resume, so the result will "
                "differ slightly from an uninterrupted run"
            )
        model = load_checkpoint(run.state)
        _extend_schedule(model, config.epochs * steps_per_epoch, log)
    else:
        model = _new_model(config, run.seeds, training, steps_per_epoch, data_info)
    prepare_model(model, config, devices)
    return model


def run_pretrain(config: PretrainConfig, *, verbose=1, log=print):
    """Runs (or resumes) pretraining (SimCLR or supervised) and writes the run directory.

    Args:
        config: a validated `PretrainConfig`.
        verbose: Keras progress-bar verbosity (0 silent, 1 bar). Defaults to 1.
        log: function receiving one-line progress messages. Defaults to `print`.

    Returns:
        The result dict also written to `result.json`.
    """
    devices = set_up_devices(config, log)  # before any TensorFlow op (multi-worker)
    with (
        start_run(config, command="pretrain", resolve_seeds=resolve_seeds, log=log) as run,
        scan_progress(verbose > 0),
    ):
        return _pretrain(run, config, devices, verbose=verbose, log=log)


def _pretrain(run, config, devices, *, verbose, log):
    """The steps of `run_pretrain` in its started `run`, which holds the directory's lock."""
    stream, steps_per_epoch, first_batch, validation, data_info = _open_source(
        config, run.seeds, log
    )
    training = _resolve_training(config)
    run.write_config(
        {
            **_resolved_record(config, training, steps_per_epoch, data_info),
            **devices.describe(config.batch_size),
        }
    )
    with devices.scope():
        model = _resume_or_build(config, run, training, steps_per_epoch, data_info, devices, log)

    logs_dir = os.path.join(run.out, "logs")
    throughput = Throughput(config.batch_size)
    callbacks = _callbacks(config, model, run.seeds, first_batch, throughput, logs_dir, log)
    fit_kwargs = {"validation_data": validation} if validation is not None else {}
    with (
        run.hints(
            nonfinite="this usually means the learning rate is too high for this batch size: start a new "
            f"run with a lower --learning-rate (this one used {training['learning_rate']:g})"
        ),
        devices.scope(),
    ):
        history = fit_resumable(
            model,
            stream,
            epochs=config.epochs,
            steps_per_epoch=steps_per_epoch,
            checkpoints=run.checkpoints,
            start=run.start,
            callbacks=callbacks,
            verbose=verbose,
            **fit_kwargs,
        )
    encoder_path, exported, onnx_path = _save_encoder(model, run.out, config, log)

    final = checkpoint_state(run.checkpoints)
    logs = final["logs"]
    result = {
        "method": config.method,
        "epochs": final["epoch"],
        "loss": logs.get("loss"),
        "history": history,
        "collapse": {key: logs.get(key) for key in COLLAPSE_KEYS if key in logs},
        **{
            key: data_info[key]
            for key in ("num_images", "skipped", "skipped_files", "repaired", "repaired_files")
        },
        **run.timing(),
        **throughput.summary(),
        "distribution": devices.describe(config.batch_size),
        "outputs": {
            "encoder": encoder_path,
            "savedmodel": exported,
            "onnx": onnx_path,
            "logs": logs_dir,
            "checkpoints": run.checkpoints,
        },
        **_method_result(config, logs, data_info),
    }
    write_json_atomic(os.path.join(run.out, "result.json"), result)
    return result
