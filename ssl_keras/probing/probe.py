"""Frozen-feature probes: how linearly separable, and how clustered, a backbone's features are.

`extract_features` runs a backbone in inference mode over labelled images; `linear_probe`
trains a softmax classifier on the standardized features and `knn_probe` votes among cosine
nearest neighbours (InstDisc). `run_probe` is the `ssl-keras probe` command and
`ProbeMonitor` logs a probe during pretraining.

Labelled image sources (`probe_data`):

- `voc:PATH`: a VOCdevkit year folder; an image's class is its largest non-difficult object
  (`localization.select_target`, as in detect); train = the `train` image set, test = `test`.
- `manifest:CSV`, or a folder holding `manifest.csv` (columns `file`, `wnid`,
  `imagenette_split`, as in the shared Imagenette sample): class = `wnid`, train = rows of
  split `train`, test = rows of split `val`; files are relative to the CSV's folder.
- `folder:PATH` (or any other folder): one sub-folder per class; a deterministic 80/20
  train/test split per class, by the SHA-1 of each file's relative path.
- `synthetic[:N]`: the embedded scenes, class of the main object; scenes in order, first 70%
  train.

Run directory layout:

```
DIR/config.json   options, seeds, backbone, data, environment
DIR/probe.json    top1, top3 (of the first method) and per-method results, counts, timings
```
"""

import dataclasses
import os
import time
import types

import keras
import numpy as np
import tensorflow as tf

from ssl_keras.data.image_files import scan_progress
from ssl_keras.data.labelled_images import (
    cap_per_class,
    keep_readable,
    labelled_dataset,
    parse_labelled_spec,
    read_class_folders,
    read_manifest,
)
from ssl_keras.data import source_spec
from ssl_keras.data import synthetic
from ssl_keras.data.source_spec import SourceError
from ssl_keras.runs.config import PROBE_METHODS
from ssl_keras.runs.run_directory import environment_info, prepare_run_directory, write_json_atomic

METHODS = PROBE_METHODS
SPEC_FORMS = "voc:PATH, manifest:CSV (or a folder holding manifest.csv), folder:PATH (one sub-folder per class) or synthetic[:N]"
SYNTHETIC_TRAIN_FRACTION = 0.7
BN_ESTIMATE_IMAGES = 512
"""Train images used to estimate batch-norm statistics before probing (see `run_probe`)."""
PROBE_CACHE_BYTES = 512 * 2**20
"""`ProbeMonitor` keeps decoded images in memory up to this size (1,000 images at 224 px: 600 MB)."""
PROBE_OPTIONS = (
    "method",
    "image_size",
    "batch_size",
    "max_per_class",
    "seed",
    "backbone_name",
    "backbone_weights",
    "epochs",
    "k",
    "temperature",
    "estimate_bn",
)
"""The arguments of `run_probe` that its `config.json` records as options, in order."""


# Probes.


def _check_arrays(train_x, train_y, test_x, test_y, num_classes):
    train_x, test_x = np.asarray(train_x, "float32"), np.asarray(test_x, "float32")
    train_y, test_y = np.asarray(train_y).astype("int64"), np.asarray(test_y).astype("int64")
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"features must be [N, C] arrays with the same C. Received: train_x {train_x.shape}, "
            f"test_x {test_x.shape}"
        )
    if train_y.shape != train_x.shape[:1] or test_y.shape != test_x.shape[:1]:
        raise ValueError(
            f"one label per feature row is needed. Received: train {train_x.shape[0]} rows, "
            f"{train_y.shape} labels; test {test_x.shape[0]} rows, {test_y.shape} labels"
        )
    if len(train_y) == 0 or len(test_y) == 0:
        raise ValueError("the train and the test set each need at least one example")
    if int(num_classes) < 1:
        raise ValueError(f"`num_classes` must be >= 1. Received: num_classes={num_classes}")
    for name, labels in (("train_y", train_y), ("test_y", test_y)):
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {num_classes - 1}]. "
                f"Received: values in [{labels.min()}, {labels.max()}]"
            )
    return train_x, train_y, test_x, test_y


def topk_accuracy(scores, labels, k):
    """Share of rows whose label is among the `k` highest scores (ties: lower index first)."""
    k = min(int(k), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def _report(scores, test_y, num_train, method, **extra):
    return {
        "top1": topk_accuracy(scores, test_y, 1),
        "top3": topk_accuracy(scores, test_y, 3),
        "num_train": int(num_train),
        "num_test": int(len(test_y)),
        "method": method,
        **extra,
    }


def linear_probe(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    num_classes,
    epochs=100,
    batch_size=256,
    learning_rate=1e-2,
    l2=1e-4,
    seed=0,
    verbose=0,
):
    """Linear evaluation: a softmax classifier trained on frozen, standardized features.

    Features are standardized with the training set's mean and standard deviation; a Keras
    `Dense` softmax layer (zero-initialized, L2 `l2`) is trained with Adam and a cosine-decayed
    learning rate on shuffled mini-batches. The shuffle is seeded locally, so the global
    Keras/TF seed is left alone (safe inside a callback).

    Args:
        train_x: float array `[N, C]`. train_y: int array `[N]`.
        test_x: float array `[M, C]`. test_y: int array `[M]`.
        num_classes: int.
        epochs: int, passes over the training features. Defaults to 100.
        batch_size: int. Defaults to 256.
        learning_rate: float, the initial learning rate, decayed to 0 (cosine) over training.
            Defaults to 1e-2.
        l2: float, L2 penalty on the weights. Defaults to 1e-4.
        seed: int, shuffle seed. Defaults to 0.
        verbose: int, 1 shows one progress bar over the epochs. Defaults to 0.

    Returns:
        A dict: `top1`, `top3` (top-min(3, C)) test accuracies, `num_train`, `num_test`,
        `method` (`"linear"`), `epochs`.

    Example:

    >>> train_x, train_y = extract_features(backbone, data.train)
    >>> test_x, test_y = extract_features(backbone, data.test)
    >>> linear_probe(train_x, train_y, test_x, test_y, num_classes=10)["top1"]
    """
    train_x, train_y, test_x, test_y = _check_arrays(train_x, train_y, test_x, test_y, num_classes)
    if int(epochs) < 1:
        raise ValueError(f"`epochs` must be >= 1. Received: epochs={epochs}")
    mean = train_x.mean(axis=0)
    std = train_x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    standardize = lambda x: ((x - mean) / std).astype("float32")
    # Softmax regression is convex: a zero start makes the result depend on the data order only.
    classifier = keras.Sequential(
        [
            keras.Input((train_x.shape[1],)),
            keras.layers.Dense(
                num_classes,
                kernel_initializer="zeros",
                kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
                name="probe_logits",
            ),
        ],
        name="linear_probe",
    )
    batch_size = min(int(batch_size), len(train_y))
    total_steps = int(epochs) * -(-len(train_y) // batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    classifier.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    dataset = tf.data.Dataset.from_tensor_slices((standardize(train_x), train_y.astype("int32")))
    dataset = dataset.shuffle(len(train_y), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    callbacks = [_EpochProgress(int(epochs))] if verbose else []
    classifier.fit(dataset, epochs=int(epochs), verbose=0, shuffle=False, callbacks=callbacks)
    # One direct call, not `predict`: a new model per probe would retrace a predict function.
    scores = keras.ops.convert_to_numpy(classifier(standardize(test_x), training=False))
    return _report(scores, test_y, len(train_y), "linear", epochs=int(epochs))


class _EpochProgress(keras.callbacks.Callback):
    """One `keras.utils.Progbar` over all epochs of a fit (Keras's own shows one per epoch)."""

    def __init__(self, epochs):
        super().__init__()
        self.progress = keras.utils.Progbar(epochs, unit_name="epoch")

    def on_epoch_end(self, epoch, logs=None):
        self.progress.update(epoch + 1, [("loss", float((logs or {}).get("loss", 0.0)))])


def knn_probe(
    train_x, train_y, test_x, test_y, *, num_classes, k=20, temperature=0.07, chunk_size=1024
):
    """Weighted k-nearest-neighbour classification on cosine similarity (InstDisc style).

    Each test feature's `k` most cosine-similar training features vote for their class with
    weight `exp(similarity / temperature)`.

    References:
        - [Wu et al., 2018](https://arxiv.org/abs/1805.01978)

    Args:
        train_x, train_y, test_x, test_y, num_classes: as in `linear_probe`.
        k: int >= 1, neighbours (capped at the training set size). Defaults to 20.
        temperature: float > 0. Defaults to 0.07.
        chunk_size: int, test rows per similarity block (bounds memory). Defaults to 1024.

    Returns:
        A dict: `top1`, `top3`, `num_train`, `num_test`, `method` (`"knn"`), `k`,
        `temperature`.
    """
    train_x, train_y, test_x, test_y = _check_arrays(train_x, train_y, test_x, test_y, num_classes)
    if int(k) < 1 or not temperature > 0:
        raise ValueError(
            f"`k` must be >= 1 and `temperature` > 0. Received: k={k}, temperature={temperature}"
        )
    k = min(int(k), len(train_y))
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    train_u, test_u = unit(train_x), unit(test_x)
    scores = np.zeros((len(test_y), num_classes), "float64")
    for start in range(0, len(test_y), chunk_size):
        similarity = test_u[start : start + chunk_size] @ train_u.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        nearest = np.take_along_axis(similarity, neighbours, axis=1)
        weights = np.exp((nearest.astype("float64") - 1.0) / temperature)  # shifted: no overflow
        rows = np.repeat(np.arange(len(neighbours)), k)
        np.add.at(
            scores[start : start + chunk_size], (rows, train_y[neighbours].ravel()), weights.ravel()
        )
    return _report(scores, test_y, len(train_y), "knn", k=k, temperature=float(temperature))


def _check_method(method, methods):
    if method not in methods:
        raise ValueError(
            f"`method` must be one of {', '.join(methods)}. Received: method={method!r}"
        )


def _run_method(
    method, train, test, num_classes, *, seed=0, epochs=100, k=20, temperature=0.07, verbose=0
):
    if method == "linear":
        return linear_probe(
            *train, *test, num_classes=num_classes, epochs=epochs, seed=seed, verbose=verbose
        )
    if method == "knn":
        return knn_probe(*train, *test, num_classes=num_classes, k=k, temperature=temperature)
    raise ValueError(f"`method` must be one of {', '.join(METHODS)}. Received: method={method!r}")


# Features.


def extract_features(backbone, dataset, *, verbose=0):
    """Runs a backbone in inference mode over labelled batches.

    Args:
        backbone: a `keras.Model` mapping float images `[B, H, W, 3]` in [0, 255] to `[B, C]`.
        dataset: iterable of `(images, labels)` batches, where `labels` is an int array `[B]` or
            a dict with `"labels"` (as `load_localization_data` yields).
        verbose: int, 1 shows a progress bar over the batches (`keras.utils.Progbar`).
            Defaults to 0.

    Returns:
        `(features, labels)`: float32 `[N, C]` and int64 `[N]` NumPy arrays.
    """
    features, labels = [], []
    progress = keras.utils.Progbar(_num_batches(dataset), unit_name="batch") if verbose else None
    batch_size = None
    for images, targets in dataset:
        if progress is not None:
            progress.add(1)
        if isinstance(targets, dict):
            targets = targets["labels"]
        batch_size = batch_size or int(images.shape[0])
        output = _predict_padded(backbone, images, batch_size)
        if output.ndim != 2:
            raise ValueError(
                f"backbone {backbone.name!r} gives {output.ndim}-D outputs {output.shape}; a probe "
                "needs pooled [N, C] features (build it with pooling='avg')"
            )
        features.append(output.astype("float32"))
        labels.append(np.asarray(targets).astype("int64").reshape(-1))
    if not features:
        raise ValueError("the dataset is empty: no features to probe")
    return np.concatenate(features), np.concatenate(labels)


def _predict_padded(backbone, images, batch_size):
    """`backbone.predict_on_batch(images)`, a short last batch padded to `batch_size` first.

    Inference is per image (batch norm uses its moving statistics), so the padding changes no
    output; it spares a second trace of the predict function for the short batch's shape.
    """
    images = np.asarray(images)
    count = images.shape[0]
    if count < batch_size:
        padding = np.zeros((batch_size - count, *images.shape[1:]), images.dtype)
        images = np.concatenate([images, padding])
    return keras.ops.convert_to_numpy(backbone.predict_on_batch(images))[:count]


def _num_batches(dataset):
    """The number of batches of a finite `tf.data.Dataset` or sized iterable, else None."""
    if isinstance(dataset, tf.data.Dataset):
        count = int(dataset.cardinality())
        return count if count >= 0 else None
    return len(dataset) if hasattr(dataset, "__len__") else None


# Labelled data.


@dataclasses.dataclass(frozen=True)
class ProbeData:
    """Labelled images for a probe.

    Attributes:
        train: `tf.data.Dataset` of `(images float32 [B, S, S, 3] in [0, 255], labels int32 [B])`,
            in a fixed order.
        test: same, for the test split.
        class_names: tuple of str; labels index into it.
        train_labels: int array, the train labels in dataset order.
        test_labels: int array, the test labels in dataset order.
        skipped: dict split -> dict reason -> count of images left out.
        description: str, one line for logs.
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    class_names: tuple
    train_labels: np.ndarray
    test_labels: np.ndarray
    skipped: dict
    description: str

    @property
    def num_train(self):
        return int(len(self.train_labels))

    @property
    def num_test(self):
        return int(len(self.test_labels))


def _read_voc(path, *, max_per_class=None, seed=0):
    from ssl_keras.data import voc
    from ssl_keras.data.localization import NO_TARGET, select_target

    splits, skipped = {}, {}
    for split, image_set in (("train", "train"), ("test", "test")):
        records, left_out = voc.load_voc_records(path, image_set)
        left_out = dict(left_out)
        items = []
        for record in records:
            target = select_target(record["objects"])
            if target is None:
                left_out[NO_TARGET] = left_out.get(NO_TARGET, 0) + 1
            else:
                items.append((record["image_path"], target[1]))
        splits[split] = cap_per_class(items, max_per_class, seed)
        skipped[split] = left_out
    return {
        "class_names": tuple(voc.VOC_CLASSES),
        "train": splits["train"],
        "test": splits["test"],
        "source": path,
        "skipped": skipped,
    }


def _parse_probe_spec(spec):
    text = os.fspath(spec).strip()
    if text.startswith("voc:"):
        parsed = source_spec.parse_source(text)
        if parsed.split is not None:
            raise SourceError(
                f"source {spec!r}: a probe uses the train and test image sets together; "
                f"drop :{parsed.split} (voc:{parsed.path})"
            )
        return "voc", parsed.path
    if text == "synthetic" or text.startswith("synthetic:"):
        return "synthetic", source_spec.parse_source(text).num_images
    labelled = parse_labelled_spec(text)
    if labelled is not None:
        return labelled
    raise SourceError(
        f"probe data {spec!r}: not a known source or an existing folder; use {SPEC_FORMS}"
    )


def probe_data(spec, *, image_size, batch_size, max_per_class=None, seed=0):
    """Opens labelled train/test images for a probe (see the module docstring for the specs).

    File sources are checked once with `image_files.scan_images`; undecodable files are left
    out and counted in `skipped`.

    Args:
        spec: str, `voc:PATH`, `manifest:CSV` (or a folder holding `manifest.csv`),
            `folder:PATH` or `synthetic[:N]`.
        image_size: int, images are resized (stretched, bilinear) to `S x S`.
        batch_size: int.
        max_per_class: int or None, the most images per class and split (seeded, deterministic
            choice). Defaults to None (all).
        seed: int, the subsampling seed. Defaults to 0.

    Returns:
        A `ProbeData`.

    Example:

    >>> data = probe_data("/work/shared/data/unlabeled", image_size=96, batch_size=64, max_per_class=50)
    >>> len(data.class_names), data.num_train
    (10, 500)
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"`image_size` must be an int > 0. Received: image_size={image_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"`batch_size` must be an int > 0. Received: batch_size={batch_size!r}")
    kind, value = _parse_probe_spec(spec)
    if kind == "synthetic":
        return _synthetic_probe_data(
            value,
            image_size=image_size,
            batch_size=batch_size,
            max_per_class=max_per_class,
            seed=seed,
            spec=spec,
        )
    reader = {"manifest": read_manifest, "folder": read_class_folders, "voc": _read_voc}[kind]
    listing = reader(value, max_per_class=max_per_class, seed=seed)
    skipped = {
        split: dict(reasons)
        for split, reasons in listing.get("skipped", {"train": {}, "test": {}}).items()
    }
    datasets, labels = {}, {}
    for split in ("train", "test"):
        items = listing[split]
        if kind != "voc":  # load_voc_records has already scanned its images
            items, scan = keep_readable(items)
            for reason, count in scan.skipped.items():
                skipped[split][reason] = skipped[split].get(reason, 0) + count
        if not items:
            raise SourceError(
                f"probe data {spec!r}: the {split} split has no readable image "
                f"(left out: {skipped[split] or 'none'})"
            )
        datasets[split], labels[split] = labelled_dataset(
            items, image_size=image_size, batch_size=batch_size
        )
    description = (
        f"{kind} {listing['source']}: train {len(labels['train'])}, test {len(labels['test'])} images, "
        f"{len(listing['class_names'])} classes; stretch to {image_size}x{image_size}"
    )
    return ProbeData(
        train=datasets["train"],
        test=datasets["test"],
        class_names=tuple(listing["class_names"]),
        train_labels=labels["train"],
        test_labels=labels["test"],
        skipped=skipped,
        description=description,
    )


def _synthetic_probe_data(num_images, *, image_size, batch_size, max_per_class, seed, spec):
    num_train = int(np.floor(num_images * SYNTHETIC_TRAIN_FRACTION + 0.5))
    if num_train < 1 or num_train >= num_images:
        raise SourceError(
            f"probe data {spec!r}: {num_images} scenes leave a split empty after the 70/30 split; "
            "use synthetic:N with N >= 3"
        )
    arrays = synthetic.make_synthetic_arrays(num_images=num_images, image_size=image_size, seed=0)
    labels = arrays["labels"][:, 0].astype("int32")
    ids = [f"synthetic-{i:05d}" for i in range(num_images)]
    datasets, split_labels = {}, {}
    for split, rows in (("train", range(num_train)), ("test", range(num_train, num_images))):
        kept = cap_per_class([(ids[i], labels[i]) for i in rows], max_per_class, seed)
        index = np.asarray([int(name.split("-")[1]) for name, _ in kept])
        dataset = tf.data.Dataset.from_tensor_slices((arrays["image"][index], labels[index]))
        dataset = dataset.map(lambda image, y: (tf.cast(image, tf.float32), y))
        datasets[split] = dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        split_labels[split] = labels[index]
    return ProbeData(
        train=datasets["train"],
        test=datasets["test"],
        class_names=tuple(synthetic.SYNTHETIC_CLASSES),
        train_labels=split_labels["train"],
        test_labels=split_labels["test"],
        skipped={"train": {}, "test": {}},
        description=(
            f"synthetic shapes: train {len(split_labels['train'])}, test "
            f"{len(split_labels['test'])} images at {image_size}x{image_size}"
        ),
    )


# Command and callback.


def _probe_backbone(
    backbone_spec, *, backbone_name, backbone_weights, estimate_bn_on, batch_size, log
):
    """`(backbone, description)` of `run_probe`'s backbone, batch-norm statistics estimated on request.

    Args:
        estimate_bn_on: None, or the `(images, labels)` batches whose first `BN_ESTIMATE_IMAGES`
            images set the backbone's batch-norm moving statistics.
    """
    from ssl_keras.backbone import resolve_backbone

    if isinstance(backbone_spec, keras.Model):
        backbone, description = backbone_spec, f"in-memory model {backbone_spec.name}"
    else:
        config = types.SimpleNamespace(
            backbone=os.fspath(backbone_spec),
            backbone_name=backbone_name,
            backbone_weights=backbone_weights,
        )
        backbone, description = resolve_backbone(config)
    if estimate_bn_on is not None:
        from ssl_keras.backbone import estimate_batch_norm_statistics

        batches = estimate_bn_on.take(max(1, BN_ESTIMATE_IMAGES // batch_size))
        bn_images = sum(int(images.shape[0]) for images, _ in batches)
        estimate_batch_norm_statistics(backbone, (images for images, _ in batches))
        description += f"; batch-norm statistics estimated on {bn_images} train images"
        log(f"batch-norm statistics estimated on {bn_images} train images")
    return backbone, description


def run_probe(
    backbone_spec,
    data_spec,
    out,
    *,
    method="linear",
    image_size=96,
    batch_size=64,
    max_per_class=None,
    seed=0,
    backbone_name="EfficientNetB1",
    backbone_weights=None,
    epochs=100,
    k=20,
    temperature=0.07,
    estimate_bn=False,
    verbose=1,
    log=print,
):
    """Probes a backbone's frozen features on labelled images and writes a run directory.

    Args:
        backbone_spec: a pretrain run directory, `ssl:DIR`, an encoder `.keras` file,
            `"imagenet"` or `"scratch"` (resolved as in `ssl-keras detect`), or a `keras.Model`.
        data_spec: str, see `probe_data`.
        out: the run directory; it must be new or empty.
        method: `"linear"`, `"knn"` or `"both"`. Defaults to `"linear"`.
        image_size: int. Defaults to 96.
        batch_size: int, feature-extraction batch size. Defaults to 64.
        max_per_class: int or None, see `probe_data`. Defaults to None.
        seed: int. Defaults to 0.
        backbone_name: str, the architecture for `"imagenet"`/`"scratch"`/weights files
            (`"tiny"` for tests). Defaults to `"EfficientNetB1"`.
        backbone_weights: str or None, a local weights file. Defaults to None.
        epochs: int, linear-probe epochs. Defaults to 100.
        k: int, kNN neighbours. Defaults to 20.
        temperature: float, kNN temperature. Defaults to 0.07.
        estimate_bn: bool. True sets the backbone's batch-norm moving statistics to those of
            the probe's train images (`estimate_batch_norm_statistics`, up to
            `BN_ESTIMATE_IMAGES` of them, labels unused) before extracting features: for
            statistics that are partly updated (a few hundred steps at momentum 0.99), whose
            offsets make every inference-mode feature point the same way. A random-init
            EfficientNetB1 as built probes *higher* without it (Imagenette at 64 px: kNN top-1
            0.234 as built, 0.156 estimated; RESULTS.md 1.4), so the default leaves the backbone
            as `detect` uses it. Defaults to False.
        verbose: int, 1 shows progress bars (scan, features, linear probe). Defaults to 1.
        log: function of one str. Defaults to `print`.

    Returns:
        The dict written to `probe.json`: `top1`, `top3` (of the first method), `results`
        (method -> `linear_probe`/`knn_probe` dict), counts, `feature_dim` and timings.
    """
    arguments = dict(locals())
    _check_method(method, METHODS)
    started = time.perf_counter()
    out = prepare_run_directory(out, command="probe")
    keras.utils.set_random_seed(seed)
    data = _open_probe_data(
        data_spec,
        verbose=verbose,
        log=log,
        image_size=image_size,
        batch_size=batch_size,
        max_per_class=max_per_class,
        seed=seed,
    )
    backbone, description = _probe_backbone(
        backbone_spec,
        backbone_name=backbone_name,
        backbone_weights=backbone_weights,
        log=log,
        estimate_bn_on=data.train if estimate_bn else None,
        batch_size=batch_size,
    )
    _write_probe_config(out, dict(arguments, out=out), data=data, description=description)
    hyper = {"seed": seed, "epochs": epochs, "k": k, "temperature": temperature}
    report = _probe(backbone, data, method, log=log, verbose=verbose, **hyper)
    report.update(backbone=description, wall_seconds=time.perf_counter() - started)
    write_json_atomic(os.path.join(out, "probe.json"), report)
    return report


def _open_probe_data(spec, *, verbose, log, **options):
    """`probe_data`, with the scan's progress bar when `verbose`; logs its description."""
    with scan_progress(verbose > 0):
        data = probe_data(spec, **options)
    log(data.description)
    return data


def _probe(backbone, data, method, *, log, verbose, **hyper):
    """Extracts the features of `data` and runs the probe `method`: the report without timings."""
    feature_start = time.perf_counter()
    if verbose:
        log(f"extracting features of {data.num_train} train and {data.num_test} test images")
    train = extract_features(backbone, data.train, verbose=verbose)
    test = extract_features(backbone, data.test, verbose=verbose)
    feature_seconds = time.perf_counter() - feature_start
    methods = ("linear", "knn") if method == "both" else (method,)
    num_classes = len(data.class_names)
    results = {
        m: _run_method(m, train, test, num_classes, verbose=verbose, **hyper) for m in methods
    }
    for name, result in results.items():
        log(f"{name} probe: top1 {result['top1']:.4f}, top3 {result['top3']:.4f}")
    return {
        "top1": results[methods[0]]["top1"],
        "top3": results[methods[0]]["top3"],
        "method": method,
        "results": results,
        "backbone": None,
        "data": data.description,
        "num_train": int(len(train[1])),
        "num_test": int(len(test[1])),
        "feature_dim": int(train[0].shape[1]),
        "class_names": list(data.class_names),
        "feature_seconds": feature_seconds,
        "wall_seconds": None,
    }


def _write_probe_config(out, arguments, *, data, description):
    """Writes the probe's `config.json`: its options (from `run_probe`'s `arguments`), seeds, and
    the data and backbone used."""
    backbone = arguments["backbone_spec"]
    options = {
        "backbone": backbone if isinstance(backbone, str) else description,
        "data": arguments["data_spec"],
        "out": arguments["out"],
        **{name: arguments[name] for name in PROBE_OPTIONS},
    }
    write_json_atomic(
        os.path.join(out, "config.json"),
        {
            "command": "probe",
            "options": options,
            "seeds": {"global": options["seed"], "data": options["seed"]},
            "resolved": {
                "backbone": description,
                "data": data.description,
                "class_names": list(data.class_names),
                "num_train": data.num_train,
                "num_test": data.num_test,
                "skipped": data.skipped,
            },
            "environment": environment_info(),
        },
    )


class ProbeMonitor(keras.callbacks.Callback):
    """Logs a frozen-feature probe of the model's encoder every few epochs.

    Adds `probe_top1` and `probe_top3` to the epoch logs, so `History` and a
    `keras.callbacks.TensorBoard` listed *after* this callback record them. Features come from
    `model.encoder` (SimCLR), else `model.backbone`, in inference mode.

    Args:
        data: a `ProbeData` (see `probe_data`).
        every: int >= 1, probe after every `every`-th epoch. Defaults to 1.
        method: `"knn"` (cheap) or `"linear"`. Defaults to `"knn"`.
        k: int, kNN neighbours. Defaults to 20.
        temperature: float, kNN temperature. Defaults to 0.07.
        epochs: int, linear-probe epochs. Defaults to 100.

    Example:

    >>> data = probe_data("synthetic:512", image_size=64, batch_size=64)
    >>> model.fit(images, epochs=50, callbacks=[ProbeMonitor(data, every=10), tensorboard])
    """

    def __init__(self, data, *, every=1, method="knn", k=20, temperature=0.07, epochs=100):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"`every` must be >= 1. Received: every={every}")
        if method not in ("linear", "knn"):
            raise ValueError(f"`method` must be 'linear' or 'knn'. Received: method={method!r}")
        self.data = data
        self.every = int(every)
        self.method = method
        self.k = k
        self.temperature = temperature
        self.epochs = epochs
        self.results = []
        self._batches = {}

    def _encoder(self):
        for name in ("encoder", "backbone"):
            encoder = getattr(self.model, name, None)
            if isinstance(encoder, keras.Model):
                return encoder
        raise ValueError(
            f"ProbeMonitor needs a model with an `encoder` or `backbone` sub-model; "
            f"{type(self.model).__name__} has neither"
        )

    def _split_batches(self, split):
        """The split's batches, decoded once and kept in memory when they fit in
        `PROBE_CACHE_BYTES`, so later probes skip reading and resizing the files again."""
        if split not in self._batches:
            dataset = getattr(self.data, split)
            num_images = len(getattr(self.data, f"{split}_labels"))
            pixels = np.prod(dataset.element_spec[0].shape[1:])
            if num_images * pixels * 4 <= PROBE_CACHE_BYTES:
                dataset = [(np.asarray(images), np.asarray(labels)) for images, labels in dataset]
            self._batches[split] = dataset
        return self._batches[split]

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        encoder = self._encoder()
        train = extract_features(encoder, self._split_batches("train"))
        test = extract_features(encoder, self._split_batches("test"))
        result = _run_method(
            self.method,
            train,
            test,
            len(self.data.class_names),
            epochs=self.epochs,
            k=self.k,
            temperature=self.temperature,
        )
        self.results.append({"epoch": epoch + 1, **result})
        if logs is not None:
            logs["probe_top1"] = result["top1"]
            logs["probe_top3"] = result["top3"]
