"""The trivial baselines a localization result must beat: a constant box and the majority class.

Both are fitted on the labelled training targets alone and never look at an image:

- `prior_box`: the one box that maximizes the mean IoU over the training targets, found by a
  coarse grid over centre and size refined by finer grids around the best cell
  (`best_constant_box`). On VOC, where large centred objects are common, it scores about
  0.41 mean IoU, so a model at 0.40 has learned nothing about where objects are.
- `majority_class`: always the classes most frequent in training, in order of frequency
  (`majority_class_ranking`); its top-1 is the share of the most frequent class.

`score_baselines` scores both on a split, and `margins` gives a model's lead over them.
"""

import numpy as np

from ssl_keras.localization.box_iou import box_iou_numpy
from ssl_keras.runs.config import MAJORITY_CLASS, PRIOR_BOX  # noqa: F401 - re-exported
from ssl_keras.localization.box_metrics import (
    MEAN_IOU,
    REPORT_IOU_THRESHOLDS,
    balanced_top1,
    class_rank_numpy,
)

BOX_METRICS = (MEAN_IOU, *(f"loc_acc@{t:g}" for t in REPORT_IOU_THRESHOLDS))
CLASS_METRICS = ("top1", "top3", "balanced_top1")


def _boxes_from_center_size(center_size):
    cy, cx, h, w = (center_size[..., i] for i in range(4))
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
    return np.clip(boxes, 0.0, 1.0)


def _mean_iou_of_candidates(candidates, targets, chunk=4096):
    scores = np.empty(len(candidates))
    for start in range(0, len(candidates), chunk):
        block = candidates[start : start + chunk]
        scores[start : start + chunk] = box_iou_numpy(block[:, None, :], targets[None, :, :]).mean(
            axis=1
        )
    return scores


def best_constant_box(boxes, *, steps=20, refinements=2):
    """The constant box with the highest mean IoU over `boxes`.

    A grid of `steps + 1` centres per axis and `steps` sizes per axis (multiples of
    `1 / steps`) is searched first; each refinement then searches a grid ten times finer
    around the best box so far. The search is deterministic (ties go to the first candidate).

    Args:
        boxes: float array `[N, 4]`, normalized `(ymin, xmin, ymax, xmax)` target boxes.
        steps: int >= 2, grid steps per unit. Defaults to 20.
        refinements: int >= 0, finer searches around the best box. Defaults to 2.

    Returns:
        `(box, mean_iou)`: float array `[4]` `(ymin, xmin, ymax, xmax)` clipped to the image,
        and its mean IoU over `boxes`.

    Example:

    >>> box, score = best_constant_box([[0.1, 0.1, 0.9, 0.9], [0.2, 0.2, 1.0, 1.0]])
    """
    targets = np.asarray(boxes, dtype="float64").reshape(-1, 4)
    if len(targets) == 0:
        raise ValueError(
            "A constant box needs at least one target box. Received: boxes of shape (0, 4)"
        )
    if int(steps) < 2:
        raise ValueError(f"`steps` must be an int >= 2. Received: steps={steps}")
    centres = np.linspace(0.0, 1.0, steps + 1)
    sizes = np.linspace(1.0 / steps, 1.0, steps)
    grid = [centres, centres, sizes, sizes]
    best = None
    spacing = 1.0 / steps
    for level in range(refinements + 1):
        mesh = np.stack(np.meshgrid(*grid, indexing="ij"), axis=-1).reshape(-1, 4)
        candidates = _boxes_from_center_size(mesh)
        scores = _mean_iou_of_candidates(candidates, targets)
        index = int(np.argmax(scores))
        best = (mesh[index], candidates[index], float(scores[index]))
        # The next grid spans one cell of this one on either side, ten times finer.
        spacing_next = spacing / 10.0
        offsets = np.arange(-10, 11) * spacing_next
        grid = [
            np.clip(best[0][i] + offsets, 0.0 if i < 2 else spacing_next, 1.0) for i in range(4)
        ]
        grid = [np.unique(axis) for axis in grid]
        spacing = spacing_next
    return best[1].astype("float32"), best[2]


def majority_class_ranking(labels, num_classes):
    """Classes by decreasing training frequency; ties go to the lower class index.

    Args:
        labels: int array `[N]`, training class indices.
        num_classes: int, C.

    Returns:
        `(ranking, counts)`: int list of the C classes, most frequent first, and the count of
        each class (list of C ints).
    """
    labels = np.asarray(labels, dtype="int64").reshape(-1)
    counts = np.bincount(labels, minlength=int(num_classes))[: int(num_classes)]
    ranking = sorted(range(int(num_classes)), key=lambda c: (-counts[c], c))
    return ranking, [int(c) for c in counts]


def fit_baselines(train_boxes, train_labels, class_names):
    """Fits both baselines on training targets; the result is what `baselines.json` holds.

    Args:
        train_boxes: float array `[N, 4]`, training target boxes in the original image frame.
        train_labels: int array `[N]`.
        class_names: sequence of C class names.

    Returns:
        A JSON-serialisable dict: `prior_box` (`box`, `train_mean_iou`), `majority_class`
        (`ranking` as class names, `train_counts` per class name) and `num_train_images`.
    """
    box, train_iou = best_constant_box(train_boxes)
    ranking, counts = majority_class_ranking(train_labels, len(class_names))
    return {
        "num_train_images": int(len(np.asarray(train_labels).reshape(-1))),
        PRIOR_BOX: {"box": [round(float(v), 6) for v in box], "train_mean_iou": train_iou},
        MAJORITY_CLASS: {
            "ranking": [class_names[c] for c in ranking],
            "train_counts": {name: counts[i] for i, name in enumerate(class_names)},
        },
    }


def score_baselines(fitted, true_boxes, true_labels, class_names):
    """Scores fitted baselines on one split.

    Args:
        fitted: dict from `fit_baselines`.
        true_boxes: float array `[N, 4]`, the split's target boxes (original frame).
        true_labels: int array `[N]`.
        class_names: sequence of C class names (the ranking's names index into it).

    Returns:
        dict: `prior_box` -> its box and `mean_iou`, `loc_acc@0.5`, `loc_acc@0.7`;
        `majority_class` -> its top classes and `top1`, `top3`, `balanced_top1`.
    """
    true_boxes = np.asarray(true_boxes, dtype="float64").reshape(-1, 4)
    true_labels = np.asarray(true_labels, dtype="int64").reshape(-1)
    box = np.asarray(fitted[PRIOR_BOX]["box"], dtype="float64")
    iou = box_iou_numpy(true_boxes, np.broadcast_to(box, true_boxes.shape))
    prior = {"box": fitted[PRIOR_BOX]["box"], MEAN_IOU: float(iou.mean())}
    for threshold in REPORT_IOU_THRESHOLDS:
        prior[f"loc_acc@{threshold:g}"] = float((iou >= threshold).mean())
    index = {name: i for i, name in enumerate(class_names)}
    ranking = [index[name] for name in fitted[MAJORITY_CLASS]["ranking"]]
    scores = np.zeros(len(class_names))
    scores[ranking] = np.arange(len(ranking), 0, -1)  # Most frequent scores highest.
    rank = class_rank_numpy(
        true_labels, np.broadcast_to(scores, (len(true_labels), len(class_names)))
    )
    majority = {
        "classes": fitted[MAJORITY_CLASS]["ranking"][:3],
        "top1": float((rank < 1).mean()),
        "top3": float((rank < 3).mean()),
        "balanced_top1": balanced_top1(true_labels, rank < 1),
    }
    return {PRIOR_BOX: prior, MAJORITY_CLASS: majority}


def margins(report, baselines):
    """A model's lead over the baselines: its metric minus the baseline's, per metric.

    Args:
        report: dict with the model's `mean_iou`, `loc_acc@0.5`, `loc_acc@0.7`, `top1`, `top3`
            (and optionally `balanced_top1`).
        baselines: dict from `score_baselines` on the same images.

    Returns:
        dict metric -> float: box metrics over `prior_box`, class metrics over `majority_class`.
    """
    out = {}
    for metric in BOX_METRICS:
        out[metric] = float(report[metric] - baselines[PRIOR_BOX][metric])
    for metric in CLASS_METRICS:
        if metric in report:
            out[metric] = float(report[metric] - baselines[MAJORITY_CLASS][metric])
    return out
