"""Where a short `ssl-keras pretrain` spends its wall time before, between and after its steps.

It runs `run_pretrain` in this process with timers around each phase: opening the images
(scan and first batch), building the model, the callbacks' set-up (the probe's images),
every callback hook (probe, collapse monitor, TensorBoard, the view-pair grid, checkpoints)
and the encoder save. The first step includes tracing; "steps" is the sum of the others.
It prints one table of seconds per phase, and the phases' sum against the wall time.

Usage: python benchmarks/time_to_first_step.py [--data ../shared/data/unlabeled]
       [--backbone EfficientNetB1] [--image-size 96] [--batch-size 32] [--epochs 2]
       [--steps-per-epoch 6] [--no-probe] [--repeats 1]
"""

import argparse
import collections
import functools
import os
import platform
import statistics
import tempfile
import time

HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_batch_end", "on_train_end")


def _timed(table, name, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            table[name] += time.perf_counter() - start

    return wrapper


def _time_hooks(table, callback):
    """Times every hook of one callback instance, under its class name."""
    label = type(callback).__name__
    for hook in HOOKS:
        setattr(callback, hook, _timed(table, f"callback {label}", getattr(callback, hook)))
    return callback


def one_run(args, out):
    from ssl_keras.pretraining import pretrain
    from ssl_keras.runs import resumable
    from ssl_keras.runs.config import PretrainConfig

    table = collections.defaultdict(float)
    originals = {
        (pretrain, "_open_source"): "open images (scan, first batch)",
        (pretrain, "_resume_or_build"): "build model",
        (pretrain, "_save_encoder"): "save encoder",
    }
    if hasattr(resumable, "create_variables_before_fit"):  # absent before issue 14 item 17
        originals[(resumable, "create_variables_before_fit")] = "create variables before fit"
    saved = {key: getattr(*key) for key in originals}
    for (module, name), label in originals.items():
        setattr(module, name, _timed(table, label, getattr(module, name)))
    make_callbacks = pretrain._callbacks

    def callbacks(*a, **k):
        start = time.perf_counter()
        made = make_callbacks(*a, **k)
        table["callback set-up (probe images)"] += time.perf_counter() - start
        return [_time_hooks(table, c) for c in made]

    pretrain._callbacks = callbacks
    whole = collections.defaultdict(float)
    pretrain.fit_resumable = _timed(whole, "fit", resumable.fit_resumable)
    checkpoint_save = resumable.RunCheckpoint.save
    resumable.RunCheckpoint.save = _timed(table, "callback RunCheckpoint", checkpoint_save)
    try:
        config = PretrainConfig(
            data=args.data,
            out=out,
            backbone=args.backbone,
            image_size=args.image_size,
            batch_size=args.batch_size,
            epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch,
            probe_data=None if args.no_probe else args.data,
            export=False,
        ).validate()
        start = time.perf_counter()
        pretrain.run_pretrain(config, verbose=0, log=lambda line: None)
        wall = time.perf_counter() - start
    finally:
        pretrain._callbacks = make_callbacks
        pretrain.fit_resumable = resumable.fit_resumable
        resumable.RunCheckpoint.save = checkpoint_save
        for key, function in saved.items():
            setattr(*key, function)
    return table, whole["fit"], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "unlabeled"
    )
    parser.add_argument("--data", default=os.path.normpath(default_data))
    parser.add_argument("--backbone", default="EfficientNetB1")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=6)
    parser.add_argument("--no-probe", action="store_true", help="no --probe-data")
    parser.add_argument("--repeats", type=int, default=1, help="runs; the table gives medians")
    args = parser.parse_args()

    from ssl_keras.runs import callbacks as run_callbacks

    steps = collections.defaultdict(list)
    throughput_init = run_callbacks.Throughput.__init__

    def keep(self, *a, **k):
        throughput_init(self, *a, **k)
        steps["throughput"].append(self)

    run_callbacks.Throughput.__init__ = keep
    tables, walls = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            table, fit_seconds, wall = one_run(args, os.path.join(tmp, "run"))
        step_seconds = steps["throughput"][-1].step_seconds
        table["first step (tracing)"] = step_seconds[0]
        table[f"other {len(step_seconds) - 1} steps"] = sum(step_seconds[1:])
        # Throughput is itself a callback; its hooks are timed but hold no work.
        table.pop("callback Throughput", None)
        in_fit = [n for n in table if n.startswith(("callback ", "first step", "other ", "create"))]
        table["fit's own work (iterators, logs)"] = fit_seconds - sum(
            table[n] for n in in_fit if n != "callback set-up (probe images)"
        )
        tables.append(table)
        walls.append(wall)

    print(
        f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"{args.backbone} {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs x "
        f"{args.steps_per_epoch} steps, probe {'off' if args.no_probe else 'on'}; "
        f"medians of {args.repeats} run(s)"
    )
    print(f"{'phase':40s} {'seconds':>8s}")
    names = sorted({name for table in tables for name in table}, key=lambda n: -tables[0].get(n, 0))
    total = 0.0
    for name in names:
        value = statistics.median(table.get(name, 0.0) for table in tables)
        total += value
        print(f"{name:40s} {value:8.1f}")
    wall = statistics.median(walls)
    print(f"{'sum of the phases':40s} {total:8.1f}")
    print(f"{'wall time of run_pretrain':40s} {wall:8.1f}")


if __name__ == "__main__":
    main()
