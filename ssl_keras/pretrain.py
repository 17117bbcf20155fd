"""`run_pretrain`: a complete, resumable SimCLR pretraining run writing a run directory.

Run directory layout:

```
DIR/config.json            every resolved option, the seeds and the environment
DIR/result.json            final loss, contrastive accuracy, epochs, images/s, wall time, skips
DIR/checkpoints/           epoch-NNNN.keras (+ state.json), used by --resume
DIR/logs/                  TensorBoard: loss, contrastive_accuracy, learning_rate, view pairs
DIR/encoder.keras          the backbone alone (keras.saving.load_model)
DIR/encoder_savedmodel/    serve(images [N,H,W,3] float in [0,255]) -> pooled features
```
"""

import os
import resource
import time

import keras
import numpy as np

from ssl_keras.backbone import make_backbone
from ssl_keras.callbacks import ImageSummary, LearningRateLogger, Throughput, image_grid
from ssl_keras.config import PretrainConfig, to_dict
from ssl_keras.data.sources import load_image_source, repaired_report, skipped_report
from ssl_keras.export import ExportError, export_encoder
from ssl_keras.optimizers import (WarmupCosineDecay, build_optimizer, default_learning_rate, default_weight_decay,
                                  resolve_optimizer_name)
from ssl_keras.projection_head import ProjectionHead
from ssl_keras.run_directory import (environment_info, prepare_run_directory, read_json,
                                     resolved_jit_compile, save_model_atomic, write_json_atomic)
from ssl_keras.simclr import SimCLR
from ssl_keras.simclr_augmenter import SimCLRAugmenter
from ssl_keras.training import (NonFiniteLossError, TrainingInterrupted, checkpoint_state, fit_resumable,
                                load_checkpoint)


def resolve_seeds(seed):
    """Derives the seeds of every random source from the run seed, recorded in config.json."""
    return {"global": seed, "augmenter": seed + 1, "data_shuffle": seed + 2, "view_grid": seed + 3}


def build_simclr(config, *, seeds):
    """Builds the (uncompiled) SimCLR model described by a `PretrainConfig`."""
    encoder = make_backbone(config.backbone, weights=config.backbone_weights)
    head = ProjectionHead(output_dim=config.projection_dim, hidden_dim=config.projection_hidden_dim,
                          num_layers=config.projection_layers)
    augmenter = SimCLRAugmenter(jitter_strength=config.jitter_strength, seed=seeds["augmenter"])
    return SimCLR(encoder, projection_head=head, augmenter=augmenter, temperature=config.temperature)


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
    schedule = getattr(model.optimizer, "_learning_rate", None)  # the schedule object, not its value
    if isinstance(schedule, WarmupCosineDecay) and schedule.total_steps != total_steps:
        log(f"learning-rate schedule stretched from {schedule.total_steps} to {total_steps} steps for the new --epochs")
        schedule.total_steps = int(total_steps)


def run_pretrain(config: PretrainConfig, *, verbose=1, log=print):
    """Runs (or resumes) SimCLR pretraining and writes the run directory.

    Args:
        config: a validated `PretrainConfig`.
        verbose: Keras progress-bar verbosity (0 silent, 1 bar). Defaults to 1.
        log: function receiving one-line progress messages. Defaults to `print`.

    Returns:
        The result dict also written to `result.json`.
    """
    started = time.perf_counter()
    out = prepare_run_directory(config.out, resume=config.resume, command="pretrain")
    config_path = os.path.join(out, "config.json")
    # A resumed run keeps the seeds it started with (config.json), whatever --seed says now.
    seeds = read_json(config_path)["seeds"] if config.resume else resolve_seeds(config.seed)
    optimizer_name = resolve_optimizer_name(config.optimizer, config.batch_size)
    learning_rate = config.learning_rate or default_learning_rate(optimizer_name, config.batch_size)
    weight_decay = config.weight_decay if config.weight_decay is not None else default_weight_decay(optimizer_name)

    keras.utils.set_random_seed(seeds["global"])
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    source = load_image_source(config.data, image_size=config.image_size, batch_size=config.batch_size,
                               seed=seeds["data_shuffle"])
    for report in (skipped_report(source.skipped_files), repaired_report(source.repaired_files)):
        if report:
            log(report)
    steps_per_epoch = config.steps_per_epoch or source.steps_per_epoch
    if source.stream is not None:
        stream = source.stream
    else:
        # TFDS sources are shuffled by tf.data, whose order restarts with the process.
        stream = lambda start_batch: source.dataset.repeat()  # noqa: E731

    jit_compile = resolved_jit_compile()
    record = {
        "command": "pretrain",
        "options": to_dict(config),
        "seeds": seeds,
        "resolved": {"optimizer": optimizer_name, "learning_rate": learning_rate,
                     "weight_decay": weight_decay, "steps_per_epoch": steps_per_epoch,
                     "num_images": source.num_images, "data": source.description,
                     "jit_compile": jit_compile},
        "environment": environment_info(),
    }
    write_json_atomic(config_path, record)

    checkpoints = os.path.join(out, "checkpoints")
    state = checkpoint_state(checkpoints)
    start = (state["epoch"], state["step"]) if state else (0, 0)
    if state:
        log(f"resuming from {state['path']} (epoch {state['epoch']}"
            + (f", step {state['step']}" if state["step"] else "") + f" of {config.epochs} epochs)")
        if source.stream is None:
            log("note: this source's shuffle order is not restored on resume, so the result will differ "
                "slightly from an uninterrupted run")
        model = load_checkpoint(state)
        _extend_schedule(model, config.epochs * steps_per_epoch, log)
    else:
        model = build_simclr(config, seeds=seeds)
        total_steps = config.epochs * steps_per_epoch
        warmup_steps = int(round(config.warmup_epochs * steps_per_epoch))
        model.compile(
            optimizer=build_optimizer(optimizer_name, learning_rate=learning_rate, total_steps=total_steps,
                                      warmup_steps=min(warmup_steps, total_steps), weight_decay=weight_decay),
            jit_compile=jit_compile,
        )
        model.build((None, config.image_size, config.image_size, 3))

    sample = next(iter(source.dataset.take(1)))
    sample = np.asarray(sample)[:8]
    logs_dir = os.path.join(out, "logs")
    throughput = Throughput(config.batch_size)
    callbacks = [
        throughput,
        LearningRateLogger(),
        keras.callbacks.TensorBoard(logs_dir, update_freq="epoch", write_graph=False),
        ImageSummary(logs_dir, "augmented_view_pairs",
                     _view_pairs(sample, model.augmenter.get_config(), seeds["view_grid"])),
    ]
    if config.probe_data:
        from ssl_keras.probe import ProbeMonitor, probe_data

        monitor_data = probe_data(config.probe_data, image_size=config.image_size, batch_size=config.batch_size,
                                  max_per_class=config.probe_max_per_class, seed=seeds["global"])
        # Before TensorBoard, so probe_top1/probe_top3 reach its epoch logs.
        callbacks.insert(2, ProbeMonitor(monitor_data, every=config.probe_every, method="knn"))
    try:
        history = fit_resumable(model, stream, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                                checkpoints=checkpoints, start=start, callbacks=callbacks, verbose=verbose)
    except TrainingInterrupted as error:
        raise TrainingInterrupted(f"{error}; resume with: ssl-keras pretrain --out {out} --resume",
                                  checkpoint=error.checkpoint, epoch=error.epoch, step=error.step) from None
    except NonFiniteLossError as error:
        raise NonFiniteLossError(
            f"{error}; this usually means the learning rate is too high for this batch size: start a new "
            f"run with a lower --learning-rate (this one used {learning_rate:g})") from None

    encoder_path = os.path.join(out, "encoder.keras")
    save_model_atomic(model.encoder, encoder_path)
    exported = None
    if config.export:
        try:
            exported = export_encoder(model.encoder, os.path.join(out, "encoder_savedmodel"))
        except ExportError as error:
            log(f"SavedModel export skipped: {error}")

    final = checkpoint_state(checkpoints)
    state = final["logs"]
    result = {
        "epochs": final["epoch"],
        "loss": state.get("loss"),
        "contrastive_accuracy": state.get("contrastive_accuracy"),
        "history": history,
        "num_images": source.num_images,
        "skipped": source.skipped,
        "skipped_files": [f"{path}: {reason}" for path, reason in source.skipped_files],
        "repaired": source.repaired,
        "repaired_files": [f"{path}: {reason}" for path, reason in source.repaired_files],
        "wall_seconds": time.perf_counter() - started,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        **throughput.summary(),
        "outputs": {"encoder": encoder_path, "savedmodel": exported, "logs": logs_dir,
                    "checkpoints": checkpoints},
    }
    write_json_atomic(os.path.join(out, "result.json"), result)
    return result
