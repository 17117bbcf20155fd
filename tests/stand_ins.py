"""Stand-ins shared by several test files."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from test_case import run_on_backend


def half_written_save(head, error):
    """A replacement for a `save(self, path, ...)` method that crashes half-way through the write.

    Monkeypatched over `keras.Model.save` or `PIL.Image.Image.save`, it writes `head`, the start
    of a file, to the path it is given, then raises `error`: a crash or a full disk mid-write.

    Args:
        head: bytes, what stands in the file when the write fails.
        error: the exception to raise.
    """

    def save(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(head)
        raise error

    return save


def tiny_detect_run(out, **options):
    """Runs `run_detect` quietly on synthetic images, small and fast; returns `(config, metrics)`.

    The tiny scratch backbone, 80 images of 32 px, 1 epoch in batches of 8, no SavedModel
    export. The modules are imported here, not at the top, so a test file that only some
    tests need them for stays light to collect.

    Args:
        out: the run folder (`str` or path).
        **options: `DetectConfig` fields that override the above.
    """
    from ssl_keras.localization.detect import run_detect
    from ssl_keras.runs.config import DetectConfig

    fields = dict(
        data="synthetic:80",
        backbone="scratch",
        backbone_name="tiny",
        out=str(out),
        epochs=1,
        image_size=32,
        batch_size=8,
        export=False,
    )
    config = DetectConfig(**(fields | options)).validate()
    return config, run_detect(config, verbose=0, log=lambda line: None)


# Hand-written compare results (no training).


def compare_row(backbone, mode, fraction, seed, mean_iou, **metrics):
    """One cell's row of compare's results table, as `compare.aggregate` takes it.

    Args:
        backbone, mode, fraction, seed: the cell.
        mean_iou: float, its mean IoU.
        **metrics: its other metric columns (`"loc_acc@0.5"`, `"top1"`, ...).
    """
    return {
        "backbone": backbone,
        "mode": mode,
        "label_fraction": fraction,
        "seed": seed,
        "num_train_images": 40,
        "mean_iou": mean_iou,
        **metrics,
        "num_test_images": 20,
        "wall_seconds": 1.0,
        "run_dir": "x",
    }


def baselines_record(prior_iou, majority_top1=0.3):
    """A cell's `baselines` record as detect writes it: the prior box's and the majority class's
    scores, told apart by the prior box's mean IoU and the majority class's top-1."""
    return {
        "prior_box": {
            "box": [0.2, 0.2, 0.8, 0.8],
            "mean_iou": prior_iou,
            "loc_acc@0.5": prior_iou - 0.1,
            "loc_acc@0.7": 0.05,
        },
        "majority_class": {
            "classes": ["dog", "cat", "car"],
            "top1": majority_top1,
            "top3": 0.6,
            "balanced_top1": 0.25,
        },
    }


def write_cell(out, backbone, fraction, seed, *, mean_iou, top1, mode="freeze", **metrics):
    """Writes a finished compare cell as detect leaves it; returns its metrics.

    `out/cells/<backbone>/<mode>/frac<fraction>/seed<seed>/` gets a `timing.json` and a
    `metrics.json`: the metrics not given follow from `mean_iou`, `top1` and `fraction`, and
    where `metrics` holds `baselines` (an older cell has none) their `margins` are added.

    Args:
        out: pathlib.Path, the compare run folder.
        backbone, fraction, seed, mode: the cell.
        mean_iou, top1: floats, its scores.
        **metrics: its other metrics (`baselines`, `balanced_top1`, ...).
    """
    from ssl_keras.localization.box_baselines import margins

    metrics = {
        "mean_iou": mean_iou,
        "loc_acc@0.5": mean_iou - 0.1,
        "loc_acc@0.7": 0.1,
        "top1": top1,
        "top3": 0.9,
        "cls_loc_acc@0.5": 0.2,
        "num_train_images": int(100 * fraction),
        "num_test_images": 50,
        **metrics,
    }
    if "baselines" in metrics:
        metrics["margins"] = margins(metrics, metrics["baselines"])
    run_dir = out / "cells" / backbone / mode / f"frac{fraction}" / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "timing.json").write_text(json.dumps({"wall_seconds": 2.0}))
    return metrics


def assert_runs_on_backend(backend, body):
    """Runs the Python source `body` to its end in a new process whose Keras uses `backend`.

    The script first checks that Keras did pick `backend`, and last prints "ok", so a script
    that exits early with 0 does not pass. Skips when `backend`'s package is not installed
    (`test_case.run_on_backend`).

    Args:
        backend: str, a `KERAS_BACKEND` value, e.g. `"torch"` or `"jax"`.
        body: str, Python source (indented or not) whose assertions are the check.
    """
    script = (
        f"import keras\nassert keras.backend.backend() == {backend!r}, keras.backend.backend()\n"
        + textwrap.dedent(body)
        + '\nprint("ok")\n'
    )
    result = run_on_backend(backend, script)
    assert result.stdout.strip().endswith("ok")


# Boxes.


def random_boxes(rng, n):
    """`n` random valid boxes `[ymin, xmin, ymax, xmax]` in [0, 1], float32, drawn from `rng`."""
    corners = np.sort(rng.uniform(0.0, 1.0, (n, 2, 2)), axis=1)
    return np.stack(
        [corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]], axis=1
    ).astype("float32")


def assert_keeps_leading_dimensions(pairwise, reference, *, seed, **tolerance):
    """Asserts that `pairwise(a, b)` of two (2, 3, 4) arrays of boxes is (2, 3), as `reference`.

    `pairwise` is a box function with one value a pair (an IoU, a loss), `reference` another
    way to compute it; `tolerance` goes to `np.testing.assert_allclose`.
    """
    import keras

    rng = np.random.default_rng(seed)
    a = random_boxes(rng, 6).reshape(2, 3, 4)
    b = random_boxes(rng, 6).reshape(2, 3, 4)
    values = keras.ops.convert_to_numpy(pairwise(a, b))
    assert values.shape == (2, 3)
    np.testing.assert_allclose(values, reference(a, b), **tolerance)


HOLDER = """  # loads run_directory.py alone: no TensorFlow, it starts in a fraction of a second
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_directory", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
lock = module.RunLock(sys.argv[2], command="pretrain")
print("locked", flush=True)
time.sleep(600)
"""


def hold_lock(directory):
    """A live process holding `directory`'s lock (until killed)."""
    from ssl_keras.runs import run_directory

    os.makedirs(directory, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run_directory.__file__, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "locked"
    return process
