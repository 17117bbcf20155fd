"""Tests of `ssl_keras.experiment.labels_saved` on hand-made curves and tables (no training)."""

import math

import numpy as np
import pytest
from stand_ins import compare_row

from ssl_keras.compare.compare import aggregate
from ssl_keras.experiment.labels_saved import (
    Match,
    format_labels_saved_md,
    fraction_to_match,
    headline,
    labels_saved,
)

# fraction_to_match


def test_inside_the_range_is_linear_in_log_fraction():
    fractions, values = [0.1, 0.25, 1.0], [0.30, 0.40, 0.50]
    # 0.45 is halfway from 0.40 (at 0.25) to 0.50 (at 1.0); halfway in log(f) is sqrt(0.25 * 1.0) = 0.5,
    # not the linear midpoint 0.625.
    match = fraction_to_match(fractions, values, 0.45)
    assert match.bound == "inside" and match.fraction == pytest.approx(0.5)
    # 0.34 is 40% of the way from 0.30 to 0.40: log f = log 0.1 + 0.4 * (log 0.25 - log 0.1).
    match = fraction_to_match(fractions, values, 0.34)
    assert match == Match(pytest.approx(math.exp(math.log(0.1) + 0.4 * math.log(2.5))), "inside")
    assert match.fraction == pytest.approx(0.1 * 2.5**0.4)  # = 0.1442...
    # A target met exactly at a measured point answers with that point.
    assert fraction_to_match(fractions, values, 0.40).fraction == pytest.approx(0.25)
    assert fraction_to_match(fractions, values, 0.50) == Match(pytest.approx(1.0), "inside")


def test_fractions_are_sorted_with_their_values():
    assert fraction_to_match([1.0, 0.1, 0.25], [0.50, 0.30, 0.40], 0.45).fraction == pytest.approx(
        0.5
    )


def test_reached_at_the_smallest_fraction_is_a_bound_below():
    assert fraction_to_match([0.1, 0.25, 1.0], [0.30, 0.40, 0.50], 0.2) == Match(0.1, "below")
    assert fraction_to_match([0.1, 0.25, 1.0], [0.30, 0.40, 0.50], 0.30) == Match(0.1, "below")


def test_never_reached_is_a_bound_above():
    assert fraction_to_match([0.1, 0.25, 1.0], [0.30, 0.40, 0.50], 0.51) == Match(None, "above")


def test_non_monotonic_curve_answers_with_its_first_crossing():
    fractions, values = [0.1, 0.25, 0.5, 1.0], [0.30, 0.45, 0.40, 0.50]
    # 0.42 is crossed going up between 10% and 25% (80% of the way), and again after the dip;
    # the first crossing is the answer.
    assert fraction_to_match(fractions, values, 0.42).fraction == pytest.approx(0.1 * 2.5**0.8)
    # 0.47 is above the bump, so only the last segment reaches it: 70% of the way from 50% to 100%.
    assert fraction_to_match(fractions, values, 0.47).fraction == pytest.approx(0.5 * 2**0.7)


def test_flat_stretches_and_equal_values():
    # Flat at the target from 25% on: the first fraction that reaches it.
    assert fraction_to_match([0.1, 0.25, 1.0], [0.2, 0.4, 0.4], 0.4) == Match(
        pytest.approx(0.25), "inside"
    )
    # Flat below the target, then rising: interpolated on the rising segment only.
    assert fraction_to_match([0.1, 0.25, 1.0], [0.3, 0.3, 0.5], 0.4).fraction == pytest.approx(0.5)
    # Averages that equal the target up to float rounding reach it.
    target = float(np.mean([0.1, 0.2, 0.3]))
    assert fraction_to_match([0.5], [0.2], target) == Match(0.5, "below")


def test_single_point_curve():
    assert fraction_to_match([0.5], [0.4], 0.3) == Match(0.5, "below")
    assert fraction_to_match([0.5], [0.4], 0.5) == Match(None, "above")


@pytest.mark.parametrize(
    "fractions, values, target, message",
    [
        ([], [], 0.4, "at least one"),
        ([0.1, 1.0], [0.3], 0.4, "2 fractions and 1 values"),
        ([0.1, 0.1], [0.3, 0.4], 0.4, "must be distinct"),
        ([0.0, 1.0], [0.3, 0.4], 0.4, r"numbers in \(0, 1\]"),
        ([0.1, 1.0], [0.3, float("nan")], 0.4, "drop that point"),
        ([0.1, 1.0], [0.3, 0.4], None, "target must be a finite number"),
    ],
)
def test_bad_curves_are_refused_with_the_input(fractions, values, target, message):
    with pytest.raises(ValueError, match=message):
        fraction_to_match(fractions, values, target)


# labels_saved on a table from compare.aggregate


def _curve_rows(backbone, curve, mode="freeze"):
    """The rows of one backbone's curve, `{fraction: (mean IoU of seed 0, of seed 1, ...)}`."""
    return [
        compare_row(backbone, mode, fraction, seed, value, **{"loc_acc@0.5": value - 0.1})
        for fraction, values in curve.items()
        for seed, value in enumerate(values)
    ]


def _assert_fields(record, **expected):
    """Asserts that `record` holds `expected`'s values under its keys, naming every one that differs."""
    assert {key: record[key] for key in expected} == expected


# freeze, 2 seeds: ssl 0.43 ± 0.014 at 10%; scratch 0.31 / 0.37 / 0.50 at 10 / 25 / 100%, clearly
# below; imagenet 0.44 at 10%, better than ssl by 0.01, which is within the 0.014 seed spread.
# finetune, 1 seed: ssl 0.50 at 10%, scratch never reaches it. prior_box rows must be ignored.
CURVES = {
    ("ssl", "freeze", 0.1): (0.42, 0.44),
    ("ssl", "freeze", 1.0): (0.55, 0.57),
    ("scratch", "freeze", 0.1): (0.30, 0.32),
    ("scratch", "freeze", 0.25): (0.36, 0.38),
    ("scratch", "freeze", 1.0): (0.49, 0.51),
    ("imagenet", "freeze", 0.1): (0.43, 0.45),
    ("imagenet", "freeze", 1.0): (0.60, 0.62),
    ("prior_box", "freeze", 0.1): (0.40, 0.40),
    ("prior_box", "freeze", 0.25): (0.45, 0.45),
    ("ssl", "finetune", 0.1): (0.50,),
    ("scratch", "finetune", 0.1): (0.35,),
    ("scratch", "finetune", 1.0): (0.45,),
}


@pytest.fixture
def table():
    rows = [
        row
        for (backbone, mode, fraction), values in CURVES.items()
        for row in _curve_rows(backbone, {fraction: values}, mode)
    ]
    return aggregate(rows)


def test_labels_saved_rows_from_an_aggregated_table(table):
    rows = labels_saved(table, reference="ssl", at=[0.1, 0.25])
    # ssl has no cell at 25%, so only 10% gives rows; the prior box is not a backbone.
    assert [(r["mode"], r["at"], r["other"]) for r in rows] == [
        ("freeze", 0.1, "scratch"),
        ("freeze", 0.1, "imagenet"),
        ("finetune", 0.1, "scratch"),
    ]
    scratch, imagenet, finetune = rows
    std = np.std([0.42, 0.44], ddof=1)

    # scratch reaches 0.43 between 25% (0.37) and 100% (0.50): 6/13 of the way in log(f).
    needed = math.exp(math.log(0.25) + 6 / 13 * (math.log(1.0) - math.log(0.25)))
    assert needed == pytest.approx(0.25 * 4 ** (6 / 13)) == pytest.approx(0.4740, abs=1e-4)
    _assert_fields(
        scratch,
        reference="ssl",
        metric="mean_iou",
        reference_mean=pytest.approx(0.43),
        reference_std=pytest.approx(std),
        reference_n=2,
        other_n=2,
        other_mean=pytest.approx(0.31),
        other_std=pytest.approx(std),
        bound="inside",
        fraction_needed=pytest.approx(needed),
        ratio=pytest.approx(needed / 0.1),
    )
    assert (
        scratch["other_better"] is False and scratch["within_noise"] is False
    )  # 0.12 apart, spread 0.014
    assert (
        scratch["text"]
        == "frozen: scratch needs 0.47 of the labels (4.7x) to match ssl at 10% (mean IoU 0.430)"
    )

    # imagenet is better than ssl at 10% already: ssl saves it no labels, and the gap is within noise.
    _assert_fields(imagenet, bound="below", fraction_needed=0.1, ratio=1.0)
    assert imagenet["other_better"] is True and imagenet["within_noise"] is True
    assert imagenet["text"] == (
        "frozen: imagenet is better than ssl at 10% (mean IoU 0.440 vs 0.430), so ssl saves "
        "no labels against it; imagenet matches it with <= 10% of the labels (the smallest "
        "fraction measured) — within noise"
    )

    # One seed: the noise is not measured; scratch never reaches 0.50 in the measured range.
    _assert_fields(finetune, bound="above", fraction_needed=None, ratio=None, reference_n=1)
    assert finetune["reference_std"] is None and finetune["other_std"] is None
    assert finetune["within_noise"] is None
    assert finetune["text"] == (
        "fine-tuned: scratch would need more than 100% of the labels to match ssl at 10% "
        "(mean IoU 0.500; outside the measured range) — n = 1, noise not measured"
    )


def _the_row_against_ssl(curves, *, at):
    """The one `labels_saved` row of a table of ssl and one other backbone, `{backbone: curve}`."""
    rows = [row for backbone, curve in curves.items() for row in _curve_rows(backbone, curve)]
    (row,) = labels_saved(aggregate(rows), reference="ssl", at=at)
    return row


def test_a_backbone_that_matches_at_its_smallest_fraction_but_is_worse_at_f():
    # scratch: 0.45 at 10%, 0.40 at 25% (a dip); ssl 0.42 at 25%. Reached at 10% already, though
    # scratch is worse than ssl at 25% itself.
    row = _the_row_against_ssl(
        {"ssl": {0.25: (0.41, 0.43)}, "scratch": {0.1: (0.44, 0.46), 0.25: (0.39, 0.41)}}, at=0.25
    )
    _assert_fields(row, bound="below", ratio=pytest.approx(0.4))
    assert row["other_better"] is False and row["within_noise"] is False  # 0.02 apart, spread 0.014
    assert row["text"] == (
        "frozen: scratch already matches ssl at 25% (mean IoU 0.420) with <= 10% of the labels "
        "(the smallest fraction measured)"
    )


def test_within_noise_uses_the_larger_spread_of_the_two():
    # ssl 0.43 ± 0.014, other 0.40 ± 0.042: 0.03 apart, within the other's spread but not ssl's.
    row = _the_row_against_ssl(
        {"ssl": {0.1: (0.42, 0.44)}, "noisy": {0.1: (0.37, 0.43), 1.0: (0.6, 0.6)}}, at=[0.1]
    )
    assert row["within_noise"] is True and row["text"].endswith(" — within noise")
    assert row["other_better"] is False and row["bound"] == "inside"


def test_other_not_measured_at_the_fraction(table):
    rows = labels_saved(table, reference="scratch", at=[0.25])
    # Only scratch has 25%: ssl and imagenet are compared by their curves, but not at 25% itself.
    ssl, imagenet = rows
    assert ssl["other_mean"] is None and ssl["other_n"] is None and ssl["within_noise"] is None
    assert ssl["other_better"] is None
    assert ssl["bound"] == "below" and ssl["text"].endswith(
        " — ssl not measured at 25%, noise not compared"
    )


def test_modes_and_metric_are_chosen(table):
    rows = labels_saved(table, reference="ssl", at=0.1, modes="finetune", metric="loc_acc@0.5")
    assert [(r["mode"], r["other"], r["metric"]) for r in rows] == [
        ("finetune", "scratch", "loc_acc@0.5")
    ]
    assert (
        rows[0]["reference_mean"] == pytest.approx(0.40)
        and "(loc acc@0.5 0.400;" in rows[0]["text"]
    )
    assert (
        labels_saved(table, reference="ssl", at=[0.5]) == []
    )  # a fraction nobody measured: no row
    assert labels_saved([], reference="ssl", at=[0.1]) == []


def test_bad_arguments_name_the_input(table):
    with pytest.raises(
        ValueError,
        match="reference 'simclr' is not a backbone of the table; use one of ssl, "
        "scratch, imagenet",
    ):
        labels_saved(table, reference="simclr", at=[0.1])
    with pytest.raises(ValueError, match=r"Received: at=\[0.1, 2\]"):
        labels_saved(table, reference="ssl", at=[0.1, 2])
    with pytest.raises(ValueError, match="no backbone of the table has 'balanced_top1'"):
        labels_saved(table, reference="ssl", at=[0.1], metric="balanced_top1")


def test_markdown_table_and_headline(table):
    rows = labels_saved(table, reference="ssl", at=[0.1])
    text = format_labels_saved_md(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| mode | labels | reference | reference mean IoU | other |")
    assert lines[2] == (
        "| freeze | 10% | ssl | 0.430 ± 0.014 (n = 2) | scratch | 0.310 ± 0.014 (n = 2) | 47% | "
        "4.7× | beyond noise |"
    )
    assert lines[3] == (
        "| freeze | 10% | ssl | 0.430 ± 0.014 (n = 2) | imagenet | 0.440 ± 0.014 (n = 2) | ≤ 10% | "
        "≤ 1× | within noise; other is better |"
    )
    assert lines[4] == (
        "| finetune | 10% | ssl | 0.500 (n = 1) | scratch | 0.350 (n = 1) | > measured range | — | "
        "n = 1, not measured |"
    )
    assert "± 0.000" not in text and text.endswith("\n")
    assert format_labels_saved_md([]).startswith(
        "No labels-saved comparison: the reference backbone has no finished"
    )
    lines = headline(rows)
    assert len(lines) == 3 and all(line.startswith("labels saved: ") for line in lines)
    assert lines[0] == (
        "labels saved: frozen: scratch needs 0.47 of the labels (4.7x) to match ssl at 10% "
        "(mean IoU 0.430)"
    )
    assert headline([]) == [
        "labels saved: nothing to compare yet (the reference has no finished cell at the "
        "fractions asked)"
    ]
