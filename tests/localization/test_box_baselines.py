"""Tests of the trivial baselines on hand-computed boxes and labels."""

import numpy as np
import pytest

from ssl_keras.localization.box_baselines import (
    best_constant_box,
    fit_baselines,
    majority_class_ranking,
    margins,
    score_baselines,
)
from ssl_keras.localization.box_iou import box_iou_numpy


def test_constant_box_of_identical_targets_is_that_box():
    box, score = best_constant_box([[0.1, 0.2, 0.6, 0.9]] * 5)
    np.testing.assert_allclose(box, [0.1, 0.2, 0.6, 0.9], atol=2e-3)
    assert score > 0.99


def test_constant_box_beats_every_grid_box_and_the_mean_box():
    rng = np.random.default_rng(0)
    centre = rng.uniform(0.3, 0.7, (60, 2))
    size = rng.uniform(0.2, 0.8, (60, 2))
    targets = np.clip(np.concatenate([centre - size / 2, centre + size / 2], axis=1), 0, 1)
    box, score = best_constant_box(targets)
    assert score == pytest.approx(
        box_iou_numpy(targets, np.broadcast_to(box, targets.shape)).mean()
    )
    mean_box = targets.mean(axis=0)
    assert score >= box_iou_numpy(targets, np.broadcast_to(mean_box, targets.shape)).mean()
    assert score >= box_iou_numpy(targets, np.broadcast_to([0, 0, 1, 1], targets.shape)).mean()


def test_constant_box_for_two_disjoint_halves():
    # Left and right halves: the whole image scores 0.5 on both, and so does either half
    # (1 and 0); nothing scores more, since IoU(left) + IoU(right) <= 1 for any box.
    box, score = best_constant_box([[0, 0, 1, 0.5], [0, 0.5, 1, 1]])
    assert score == pytest.approx(0.5, abs=1e-6)
    assert any(
        np.allclose(box, option, atol=1e-6)
        for option in ([0, 0, 1, 1], [0, 0, 1, 0.5], [0, 0.5, 1, 1])
    )


def test_majority_ranking_ties_go_to_the_lower_index():
    ranking, counts = majority_class_ranking([2, 2, 1, 1, 0, 3, 3, 3], 5)
    assert ranking == [3, 1, 2, 0, 4] and counts == [1, 2, 2, 3, 0]


def test_scores_on_hand_computed_split():
    names = ["cat", "dog", "bird"]
    fitted = fit_baselines([[0, 0, 0.5, 0.5]] * 3, [1, 1, 0], names)
    assert fitted["majority_class"]["ranking"] == ["dog", "cat", "bird"]
    np.testing.assert_allclose(fitted["prior_box"]["box"], [0, 0, 0.5, 0.5], atol=2e-3)
    scored = score_baselines(
        fitted, [[0, 0, 0.5, 0.5], [0, 0, 1, 1], [0.5, 0.5, 1, 1]], [1, 2, 0], names
    )
    prior = scored["prior_box"]
    # IoUs 1, 0.25, 0 (up to the search's 1e-3 grid).
    assert prior["mean_iou"] == pytest.approx(1.25 / 3, abs=3e-3)
    assert prior["loc_acc@0.5"] == pytest.approx(1 / 3) and prior["loc_acc@0.7"] == pytest.approx(
        1 / 3
    )
    majority = scored["majority_class"]
    assert majority["top1"] == pytest.approx(1 / 3)  # only the dog
    assert majority["top3"] == pytest.approx(1.0)
    assert majority["balanced_top1"] == pytest.approx(1 / 3)  # dog 1, bird 0, cat 0
    lead = margins(
        {"mean_iou": 0.5, "loc_acc@0.5": 0.0, "loc_acc@0.7": 0.0, "top1": 1.0, "top3": 1.0}, scored
    )
    assert lead["mean_iou"] == pytest.approx(0.5 - prior["mean_iou"])
    assert lead["loc_acc@0.5"] == pytest.approx(-1 / 3) and lead["top1"] == pytest.approx(2 / 3)
    assert "balanced_top1" not in lead


def test_empty_targets_raise():
    with pytest.raises(ValueError, match="at least one"):
        best_constant_box(np.zeros((0, 4)))
