"""Tests of `ssl_keras.compare.compare`: config checks, aggregation, plots, and a tiny resumable grid."""

import csv
import json
import os
import shutil

import numpy as np
import pytest
from stand_ins import baselines_record, compare_row, write_cell
from PIL import Image

from ssl_keras.compare import compare
from ssl_keras.backbone import BackboneWeightsError, tiny_backbone
from ssl_keras.compare.compare import (
    CompareConfig,
    aggregate,
    backbone_label,
    baseline_rows,
    describe_baselines,
    describe_results,
    format_results_md,
    grid_cells,
    metric_figure,
    plot_metric,
    run_compare,
    summarize_compare,
)
from ssl_keras.runs.config import ConfigError, build_config
from ssl_keras.runs.run_directory import RunDirectoryError

TINY = dict(
    data="synthetic:120",
    backbone_name="tiny",
    label_fractions="0.5",
    modes="freeze",
    seeds=1,
    epochs=1,
    image_size=32,
    batch_size=16,
)


def _row(backbone, mode, fraction, seed, mean_iou, loc=0.5):
    return compare_row(
        backbone,
        mode,
        fraction,
        seed,
        mean_iou,
        **{
            "loc_acc@0.5": loc,
            "loc_acc@0.7": 0.1,
            "top1": 0.5,
            "top3": 0.9,
            "cls_loc_acc@0.5": 0.3,
        },
    )


KNOWN_ROWS = [
    _row("ssl", "freeze", 0.1, 0, 0.5, loc=0.2),
    _row("ssl", "freeze", 0.1, 1, 0.6, loc=0.3),
    _row("ssl", "freeze", 0.1, 2, 0.7, loc=0.4),
    _row("scratch", "freeze", 0.1, 0, 0.4, loc=0.6),
    _row("scratch", "freeze", 0.1, 1, 0.6, loc=0.6),
    _row("scratch", "freeze", 0.1, 2, 0.5, loc=0.6),
    _row("ssl", "finetune", 1.0, 0, 0.8),
    _row("scratch", "finetune", 1.0, 0, 0.3),
]


# Config


def test_config_parses_lists_and_labels():
    config = CompareConfig(
        backbones="ssl:runs/p1, imagenet,scratch,runs/p2/,mine=ssl:runs/p3",
        label_fractions="0.1,1",
        modes="freeze,finetune",
        seeds=2,
        **{k: v for k, v in TINY.items() if k not in ("label_fractions", "modes", "seeds")},
    )
    assert config.label_fractions == [0.1, 1.0] and config.modes == ["freeze", "finetune"]
    assert config.labelled_backbones() == [
        ("ssl", "ssl:runs/p1"),
        ("imagenet", "imagenet"),
        ("scratch", "scratch"),
        ("p2", "runs/p2/"),
        ("mine", "ssl:runs/p3"),
    ]
    config.validate()
    cells = grid_cells(config)
    assert len(cells) == 5 * 2 * 2 * 2
    assert cells[0].run_dir == os.path.join("cells", "ssl", "freeze", "frac0.1", "seed0")
    assert backbone_label("runs/p1/encoder.keras") == ("encoder.keras", "runs/p1/encoder.keras")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"label_fractions": "0.5,1.5"}, "--label-fractions must be numbers in (0, 1]"),
        ({"label_fractions": "half"}, "--label-fractions must be comma-separated numbers"),
        ({"modes": "freeze,frozen"}, "--modes must be a comma-separated list of freeze, finetune"),
        ({"seeds": 0}, "--seeds must be an integer >= 1"),
        ({"backbones": "ssl:a,ssl:b"}, "both get the label 'ssl'"),
        (
            {"backbones": "prior_box=scratch"},
            "the label 'prior_box' is reserved for a baseline row",
        ),
        ({"epochs": 0}, "--epochs must be an integer >= 1"),  # caught by the cells' DetectConfig
        ({"image_size": 16}, "--image-size must be an integer >= 32"),
    ],
)
def test_config_rejects_out_of_range_values(overrides, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("]", r"\]")
    ):
        build_config(CompareConfig, **{**TINY, "backbones": "scratch", **overrides})


# Aggregation, tables, findings and plots (pure functions)


def test_aggregate_mean_and_sample_std():
    table = aggregate(KNOWN_ROWS)
    assert [(e["mode"], e["label_fraction"], e["backbone"]) for e in table] == [
        ("freeze", 0.1, "ssl"),
        ("freeze", 0.1, "scratch"),
        ("finetune", 1.0, "ssl"),
        ("finetune", 1.0, "scratch"),
    ]
    ssl, scratch, single = table[0], table[1], table[2]
    assert ssl["n"] == 3 and ssl["seeds"] == [0, 1, 2]
    # ssl: 0.5, 0.6, 0.7 -> mean 0.6, squared deviations 0.01 + 0 + 0.01 over n-1 = 2 -> std 0.1.
    np.testing.assert_allclose([ssl["mean_iou"], ssl["mean_iou_std"]], [0.6, 0.1])
    # scratch: 0.4, 0.6, 0.5 -> mean 0.5, std 0.1; loc 0.6 thrice -> std 0.
    np.testing.assert_allclose([scratch["mean_iou"], scratch["mean_iou_std"]], [0.5, 0.1])
    np.testing.assert_allclose(
        [scratch["loc_acc@0.5"], scratch["loc_acc@0.5_std"]], [0.6, 0.0], atol=1e-12
    )
    np.testing.assert_allclose([ssl["loc_acc@0.5"], ssl["loc_acc@0.5_std"]], [0.3, 0.1])
    assert single["n"] == 1 and single["mean_iou"] == 0.8 and single["mean_iou_std"] == 0.0


def test_results_md_marks_best_mean_per_column():
    text = format_results_md(aggregate(KNOWN_ROWS))
    freeze, finetune = text.split("### finetune")
    ssl_row = next(line for line in freeze.splitlines() if line.startswith("| 10% | ssl |"))
    scratch_row = next(line for line in freeze.splitlines() if line.startswith("| 10% | scratch |"))
    # mean IoU: ssl best; loc acc@0.5: scratch best; the other metrics tie, so both are bold.
    assert "**0.600 ± 0.100**" in ssl_row and "| 0.500 ± 0.100 |" in scratch_row
    assert "| 0.300 ± 0.100 |" in ssl_row and "**0.600 ± 0.000**" in scratch_row
    assert "| 3 | 40 |" in ssl_row
    # n=1: the mean alone (no "± 0": the spread is not measured), n shown; best of its own column only.
    ssl_single = next(line for line in finetune.splitlines() if line.startswith("| 100% | ssl |"))
    assert ssl_single.startswith("| 100% | ssl | 1 | 40 | **0.800** |") and "| 0.300 |" in finetune
    assert "±0" not in text and "± 0 " not in text and "± 0.000" not in finetune
    assert "a value without ± is a single seed (n = 1)" in text


def test_results_md_marks_a_metric_with_fewer_seeds_than_its_row():
    rows = [
        dict(_row("a", "freeze", 0.1, 0, 0.5), balanced_top1=0.4),
        _row("a", "freeze", 0.1, 1, 0.7),
    ]
    table = aggregate(rows)
    assert table[0]["n"] == 2 and table[0]["mean_iou_n"] == 2 and table[0]["balanced_top1_n"] == 1
    line = next(
        line
        for line in format_results_md(table, metrics=("mean_iou", "balanced_top1")).splitlines()
        if line.startswith("| 10% | a |")
    )
    assert line == "| 10% | a | 2 | 40 | 0.600 ± 0.141 | 0.400 (n = 1) |"


def test_describe_results_reports_gap_and_noise():
    table = aggregate(KNOWN_ROWS)
    freeze, finetune = describe_results(table)
    # ssl 0.6 ± 0.1 vs scratch 0.5 ± 0.1: gap 0.1 does not exceed the std 0.1, so no winner is named.
    assert freeze == (
        "freeze, 10% of the labels: ssl and scratch are within noise on mean IoU, 0.600 vs 0.500 "
        "(+0.100, not larger than the std over seeds 0.100), so neither wins here."
    )
    assert "has the best" not in freeze
    assert (
        "one seed only" in finetune
        and "+0.500" in finetune
        and "ssl has the best mean IoU" in finetune
    )
    wide = aggregate(
        [_row("a", "freeze", 0.1, s, v) for s, v in enumerate((0.8, 0.82))]
        + [_row("b", "freeze", 0.1, s, v) for s, v in enumerate((0.5, 0.52))]
    )
    assert (
        "a has the best mean IoU, 0.810 vs 0.510 for b (+0.300); the gap exceeds the std over seeds"
        in (describe_results(wide)[0])
    )


def test_describe_results_lists_every_backbone_within_noise_of_the_best():
    values = {"a": (0.60, 0.70), "b": (0.58, 0.66), "c": (0.30, 0.31)}
    table = aggregate(
        [_row(b, "freeze", 0.1, s, v) for b, pair in values.items() for s, v in enumerate(pair)]
    )
    (sentence,) = describe_results(table)
    # a 0.650 ± 0.071, b 0.620 ± 0.057: within noise; c 0.305 is far below both and is not named.
    assert sentence == (
        "freeze, 10% of the labels: a and b are within noise on mean IoU, 0.650 vs 0.620 "
        "(+0.030, not larger than the std over seeds 0.071), so neither wins here."
    )


def test_a_margin_within_the_backbones_own_seed_noise_is_not_a_win():
    # The prior box moves with the seed's labelled subset: margins +0.02 twice (std 0), but the
    # backbone's own mean IoU spreads by 0.071 over the seeds, which the margin does not exceed.
    rows = [
        dict(_row("a", "freeze", 0.1, s, v), mean_iou_margin=0.02)
        for s, v in enumerate((0.42, 0.52))
    ]
    rows += [
        dict(_row("b", "freeze", 0.1, s, v), mean_iou_margin=m)
        for s, v, m in [(0, 0.30, -0.2), (1, 0.31, -0.19)]
    ]
    table = aggregate(rows)
    a, b = table
    assert (
        compare.baseline_verdict(a, "mean_iou") == "within noise"
        and compare.beats_baseline(a, "mean_iou") is False
    )
    assert compare.baseline_verdict(b, "mean_iou") == "does not beat"
    first, second = describe_baselines(table)
    assert first == (
        "freeze, 10% of the labels, a: mean IoU 0.470 is within noise of the constant prior box "
        "(margin +0.020 ± 0.000, not larger than the std over seeds 0.071)."
    )
    assert second == (
        "freeze, 10% of the labels, b: mean IoU 0.305 does not beat the constant prior box "
        "(margin -0.195 ± 0.007)."
    )
    # Neither beats the prior, so no best backbone is named, however far apart a and b are.
    assert "no backbone beats the constant prior box on mean IoU" in describe_results(table)[0]
    # One seed: the noise is not measured, so a positive margin still counts (and is said to be unmeasured).
    single = aggregate(rows[:1])[0]
    assert compare.baseline_verdict(single, "mean_iou") == "beats"
    assert "one seed so the noise is not measured" in describe_baselines([single])[0]


def test_plot_metric_writes_png_of_expected_size(tmp_path):
    table = aggregate(
        KNOWN_ROWS + [_row("ssl", "freeze", 1.0, 0, 0.7), _row("ssl", "finetune", 0.1, 0, 0.4)]
    )
    path = plot_metric(table, "mean_iou", str(tmp_path / "plot_mean_iou.png"))
    assert os.path.getsize(path) > 8_000
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG" and image.size == (
            1000,
            400,
        )  # two modes, 5 x 4 inches each at 100 dpi


def _error_bars(ax, label):
    """{x: (low, high)} of the error bars drawn for the backbone `label`."""
    (container,) = [c for c in ax.containers if c.get_label() == label]
    bars = {}
    for collection in container.lines[2]:
        for segment in collection.get_segments():
            bars[round(float(segment[0][0]), 6)] = tuple(sorted(float(y) for y in segment[:, 1]))
    return bars


def test_plot_of_nearly_flat_data_spans_at_least_0_1_and_shows_the_prior():
    # Means within 0.004 of each other and a prior box 0.06 below them: a tight y axis would turn
    # seed noise into a trend and drop the prior off the plot.
    rows = [
        _row(b, mode, f, s, v)
        for mode in ("freeze", "finetune")
        for b, f, values in [
            ("ssl", 0.1, (0.421, 0.423)),
            ("ssl", 1.0, (0.424, 0.425)),
            ("scratch", 0.1, (0.420, 0.422)),
            ("scratch", 1.0, (0.422,)),
        ]
        for s, v in enumerate(values)
    ]
    rows += [
        dict(
            _row("prior_box", mode, f, s, 0.36),
            **{m: None for m in ("top1", "top3", "cls_loc_acc@0.5")},
        )
        for mode in ("freeze", "finetune")
        for f in (0.1, 1.0)
        for s in (0, 1)
    ]
    table = aggregate(rows)
    figure = metric_figure(table, "mean_iou")
    frozen, finetuned = figure.axes
    assert [ax.get_title() for ax in figure.axes] == ["frozen backbone", "fine-tuned"]
    assert frozen.get_ylim() == finetuned.get_ylim()  # one shared y axis
    low, high = frozen.get_ylim()
    assert high - low >= 0.1 - 1e-9
    assert low < 0.36 and high > 0.425  # the prior line and every mean are inside
    for ax in figure.axes:
        assert ax.get_xscale() == "log"
        np.testing.assert_allclose(ax.get_xticks(), [0.1, 1.0])
        assert [t.get_text() for t in ax.get_xticklabels()] == ["10%", "100%"]
        # ssl has two seeds everywhere: bars of ± the sample std; scratch at 100% has one: no bar.
        bars = _error_bars(ax, "ssl")
        std = np.std([0.421, 0.423], ddof=1)
        np.testing.assert_allclose(bars[0.1], [0.422 - std, 0.422 + std])
        assert sorted(_error_bars(ax, "scratch")) == [0.1]
        assert all(low <= y <= high for pair in bars.values() for y in pair)
    (prior,) = [line for line in frozen.get_lines() if line.get_label() == "prior box (no image)"]
    assert prior.get_linestyle() == "--"


def test_plot_y_limits_hold_wide_error_bars_and_stay_in_0_1():
    rows = [_row("a", "freeze", 0.5, s, v) for s, v in enumerate((0.02, 0.30))]
    low, high = metric_figure(aggregate(rows), "mean_iou").axes[0].get_ylim()
    mean, std = 0.16, np.std([0.02, 0.30], ddof=1)
    # The bar reaches below 0 (0.16 - 0.198): it is shown whole rather than cut at 0.
    assert low <= mean - std and high >= mean + std
    assert compare.metric_y_limits([0.01, 0.02]) == (0.0, 0.1)  # shifted up, not below 0
    assert compare.metric_y_limits([0.985, 0.99]) == (0.9, 1.0)
    assert compare.metric_y_limits([0.41, 0.42]) == pytest.approx((0.365, 0.465))
    assert compare.metric_y_limits([]) is None


# The baselines, from hand-written cells (no training)


def _write_cell(out, backbone, fraction, seed, *, mean_iou, top1, baselines=None, mode="freeze"):
    """A finished cell's metrics.json as detect writes it; `baselines=None` writes an old one."""
    new = {}
    if baselines is not None:
        new = dict(balanced_top1=top1 - 0.05, classes_predicted=3, baselines=baselines)
    write_cell(
        out,
        backbone,
        fraction,
        seed,
        mean_iou=mean_iou,
        top1=top1,
        mode=mode,
        selected_epoch=1,
        **new,
    )


# Per fraction and seed: the prior box's and the model's mean IoU, and top-1s. At 10%, ssl beats
# the prior (margins +0.2, +0.2) and scratch does not (+0.010, -0.004: +0.003 ± 0.010); at 100%
# neither does. ssl's top-1 beats the majority class (0.7 vs 0.3); scratch's equals it.
PRIOR = {(0.1, 0): 0.40, (0.1, 1): 0.42, (1.0, 0): 0.45, (1.0, 1): 0.45}
MODEL_IOU = {
    ("ssl", 0.1, 0): 0.60,
    ("ssl", 0.1, 1): 0.62,
    ("scratch", 0.1, 0): 0.41,
    ("scratch", 0.1, 1): 0.416,
    ("ssl", 1.0, 0): 0.44,
    ("ssl", 1.0, 1): 0.45,
    ("scratch", 1.0, 0): 0.43,
    ("scratch", 1.0, 1): 0.44,
}
MODEL_TOP1 = {"ssl": 0.7, "scratch": 0.3}


@pytest.fixture
def written_grid(tmp_path):
    out = tmp_path / "out"
    config = CompareConfig(
        **{
            **TINY,
            "backbones": "ssl:runs/p1,scratch",
            "label_fractions": "0.1,1",
            "seeds": 2,
            "out": str(out),
        }
    )
    for (backbone, fraction, seed), mean_iou in MODEL_IOU.items():
        _write_cell(
            out,
            backbone,
            fraction,
            seed,
            mean_iou=mean_iou,
            top1=MODEL_TOP1[backbone],
            baselines=baselines_record(PRIOR[fraction, seed], 0.3),
        )
    logs = []
    return config, summarize_compare(config, log=logs.append), logs


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_has_margins_and_one_baseline_row_pair_per_fraction_and_seed(written_grid):
    config, summary, _ = written_grid
    rows = _csv(summary["outputs"]["results_csv"])
    assert list(rows[0]) == list(compare.CSV_COLUMNS)
    assert [r["backbone"] for r in rows] == ["ssl", "scratch"] * 4 + [
        "prior_box",
        "majority_class",
    ] * 4
    ssl = next(
        r for r in rows if (r["backbone"], r["label_fraction"], r["seed"]) == ("ssl", "0.1", "1")
    )
    assert float(ssl["mean_iou_margin"]) == pytest.approx(0.62 - 0.42)
    assert float(ssl["loc_acc@0.5_margin"]) == pytest.approx(0.52 - 0.32)
    assert float(ssl["top1_margin"]) == pytest.approx(0.4) and float(
        ssl["top3_margin"]
    ) == pytest.approx(0.3)
    assert float(ssl["loc_acc@0.7_margin"]) == pytest.approx(0.05) and float(
        ssl["balanced_top1"]
    ) == pytest.approx(0.65)
    baselines = {
        (r["backbone"], r["label_fraction"], r["seed"]): r
        for r in rows
        if r["backbone"] in ("prior_box", "majority_class")
    }
    assert len(baselines) == 8
    prior = baselines["prior_box", "0.1", "1"]
    assert float(prior["mean_iou"]) == pytest.approx(0.42) and float(
        prior["loc_acc@0.5"]
    ) == pytest.approx(0.32)
    assert prior["mode"] == "freeze" and prior["num_train_images"] == "10"
    assert all(
        prior[c] == ""
        for c in ("top1", "top3", "balanced_top1", "cls_loc_acc@0.5", "mean_iou_margin")
    )
    majority = baselines["majority_class", "1.0", "0"]
    assert [float(majority[c]) for c in ("top1", "top3", "balanced_top1")] == pytest.approx(
        [0.3, 0.6, 0.25]
    )
    assert all(majority[c] == "" for c in ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1_margin"))
    # The summary's rows are the cells only: the Grad-CAM hook and the report count them.
    assert len(summary["rows"]) == 8 and len(summary["baseline_rows"]) == 8


def test_results_md_has_baseline_rows_and_margin_columns(written_grid):
    _, summary, _ = written_grid
    text = open(summary["outputs"]["results_md"]).read()
    header = next(line for line in text.splitlines() if line.startswith("| labels |"))
    assert header.endswith("| Δ IoU vs prior | Δ LocAcc@0.5 vs prior | Δ top-1 vs majority |")
    lines = text.splitlines()
    block = lines[lines.index(header) :]
    labels = [
        line.split(" | ")[:2]
        for line in block
        if line.startswith("| 10%") or line.startswith("| 100%")
    ]
    assert labels == [
        ["| 10%", "ssl"],
        ["| 10%", "scratch"],
        ["| 10%", "prior_box"],
        ["| 10%", "majority_class"],
        ["| 100%", "ssl"],
        ["| 100%", "scratch"],
        ["| 100%", "prior_box"],
        ["| 100%", "majority_class"],
    ]
    row = lambda start: next(line for line in lines if line.startswith(start))
    ssl, scratch = row("| 10% | ssl |"), row("| 10% | scratch |")
    # Margins over seeds: ssl +0.2 twice; scratch +0.010 and -0.004 -> +0.003 ± 0.010 (ddof=1).
    assert ssl.endswith("| **+0.200 ± 0.000** | **+0.200 ± 0.000** | **+0.400 ± 0.000** |")
    assert scratch.endswith("| +0.003 ± 0.010 | +0.003 ± 0.010 | +0.000 ± 0.000 |")
    prior = row("| 10% | prior_box |").split(" | ")
    # labels, backbone, n, images, mean IoU, loc@0.5, loc@0.7, top-1, top-3, cls+loc, 3 margins.
    assert prior[2:7] == ["2", "10", "0.410 ± 0.014", "0.310 ± 0.014", "0.050 ± 0.000"]
    assert prior[7:] == ["—", "—", "—", "—", "—", "— |"]
    majority = row("| 10% | majority_class |").split(" | ")
    assert majority[4:7] == ["—", "—", "—"] and majority[7:9] == ["0.300 ± 0.000", "0.600 ± 0.000"]
    # The baselines are never bold: they are not backbones.
    assert "**" not in row("| 100% | prior_box |") + row("| 100% | majority_class |")


def test_report_says_which_backbone_beats_the_baselines(written_grid):
    _, summary, logs = written_grid
    report = open(summary["outputs"]["report"]).read()
    assert report.index("Baselines: `prior_box` predicts one constant box") < report.index(
        "## Grid"
    )
    assert (
        "freeze, 10% of the labels, ssl: mean IoU 0.610 beats the constant prior box (margin +0.200 ± 0.000; "
        "prior 0.410); top-1 0.700 beats the majority class (margin +0.400 ± 0.000; majority 0.300)."
    ) in report
    # scratch: margin +0.003 ± 0.010 is within the seed noise, not a win; a margin of exactly 0 with no
    # spread at all is a tie, which does not beat the baseline either.
    assert (
        "freeze, 10% of the labels, scratch: mean IoU 0.413 is within noise of the constant prior box "
        "(margin +0.003 ± 0.010; prior 0.410); top-1 0.300 does not beat the majority class "
        "(margin +0.000 ± 0.000; majority 0.300)."
    ) in report
    assert (
        "freeze, 100% of the labels, ssl: mean IoU 0.445 is within noise of the constant prior box"
        in report
    )
    assert "the larger of the margin's and the backbone's own sample std over seeds" in report
    # 10%: ssl beats the prior, so the best-backbone sentence stands; 100%: nobody beats it, so no winner.
    assert (
        "freeze, 10% of the labels: ssl has the best mean IoU, 0.610 vs 0.413 for scratch (+0.197)"
        in report
    )
    assert (
        "freeze, 100% of the labels: no backbone beats the constant prior box on mean IoU (the best, ssl, "
        "has 0.445, margin -0.005 ± 0.007), so no backbone wins here."
    ) in report
    assert "100% of the labels: ssl has the best" not in report
    assert any("scratch: mean IoU 0.413 is within noise of" in line for line in logs)


def test_describe_results_names_a_best_backbone_that_does_not_beat_the_prior():
    rows = [
        dict(_row(b, "freeze", 0.1, s, v), mean_iou_margin=m)
        for b, s, v, m in [
            ("a", 0, 0.50, 0.02),
            ("a", 1, 0.52, 0.30),
            ("b", 0, 0.45, 0.10),
            ("b", 1, 0.46, 0.11),
        ]
    ]
    # a: margin 0.16 ± 0.20 is within noise of the prior; b: 0.105 ± 0.007 beats it, so a best is still named.
    (sentence,) = describe_results(aggregate(rows))
    assert sentence.startswith(
        "freeze, 10% of the labels: a has the best mean IoU, 0.510 vs 0.455 for b"
    )
    assert sentence.endswith(
        "; a itself is within noise of the constant prior box (margin +0.160 ± 0.198)."
    )


def test_plot_draws_the_baseline_as_a_dashed_gray_line(written_grid, tmp_path):
    _, summary, _ = written_grid
    table = summary["table"]

    def baseline_lines(metric, label):
        ax = metric_figure(table, metric).axes[0]
        return [line for line in ax.get_lines() if line.get_label() == label]

    (prior,) = baseline_lines("mean_iou", "prior box (no image)")
    assert prior.get_linestyle() == "--" and prior.get_color() == "gray"
    np.testing.assert_allclose(prior.get_xdata(), [0.1, 1.0])
    np.testing.assert_allclose(prior.get_ydata(), [0.41, 0.45])
    (prior_loc,) = baseline_lines("loc_acc@0.5", "prior box (no image)")
    np.testing.assert_allclose(prior_loc.get_ydata(), [0.31, 0.35])
    (majority,) = baseline_lines("top1", "majority class (no image)")
    np.testing.assert_allclose(majority.get_ydata(), [0.3, 0.3])
    assert baseline_lines("mean_iou", "majority class (no image)") == []
    legend = [
        text.get_text()
        for text in metric_figure(table, "mean_iou").axes[0].get_legend().get_texts()
    ]
    # The baselines are drawn once, as reference lines, not as backbones with error bars.
    assert sorted(legend) == ["prior box (no image)", "scratch", "ssl"]
    with Image.open(plot_metric(table, "mean_iou", str(tmp_path / "p.png"))) as image:
        assert image.size == (500, 400)


def test_old_cells_without_baselines_are_read_as_before(tmp_path):
    out = tmp_path / "out"
    config = CompareConfig(**{**TINY, "backbones": "ssl:runs/p1,scratch", "out": str(out)})
    _write_cell(out, "ssl", 0.5, 0, mean_iou=0.6, top1=0.5)
    _write_cell(out, "scratch", 0.5, 0, mean_iou=0.5, top1=0.5)
    summary = summarize_compare(config, log=lambda line: None)
    rows = _csv(summary["outputs"]["results_csv"])
    assert [r["backbone"] for r in rows] == ["ssl", "scratch"]
    assert all(r[c] == "" for r in rows for c in ("balanced_top1",) + compare.MARGINS)
    assert float(rows[0]["mean_iou"]) == pytest.approx(0.6)
    md = open(summary["outputs"]["results_md"]).read()
    assert "Δ" not in md and "prior_box" not in md and "| 50% | ssl | 1 | 50 | **0.600** |" in md
    report = open(summary["outputs"]["report"]).read()
    assert "predate the trivial baselines" in report and "Baselines: `prior_box`" not in report
    assert summary["findings"] == [
        "freeze, 50% of the labels: ssl has the best mean IoU, 0.600 vs 0.500 for "
        "scratch (+0.100); one seed only, so the noise is not measured."
    ]
    assert [
        line.get_label()
        for line in metric_figure(summary["table"], "mean_iou").axes[0].get_lines()
        if line.get_linestyle() == "--"
    ] == []


def test_a_grid_of_old_and_new_cells_takes_the_baselines_from_the_new_ones(tmp_path):
    out = tmp_path / "out"
    config = CompareConfig(**{**TINY, "backbones": "ssl:runs/p1,scratch", "out": str(out)})
    _write_cell(out, "ssl", 0.5, 0, mean_iou=0.6, top1=0.5)
    _write_cell(
        out, "scratch", 0.5, 0, mean_iou=0.5, top1=0.5, baselines=baselines_record(0.45, 0.2)
    )
    summary = summarize_compare(config, log=lambda line: None)
    rows = _csv(summary["outputs"]["results_csv"])
    assert [r["backbone"] for r in rows] == ["ssl", "scratch", "prior_box", "majority_class"]
    assert rows[2]["run_dir"] == rows[1]["run_dir"] and float(rows[2]["mean_iou"]) == pytest.approx(
        0.45
    )
    assert describe_baselines(summary["table"]) == [
        "freeze, 50% of the labels, scratch: mean IoU 0.500 beats the constant prior box (margin +0.050, one seed "
        "so the noise is not measured; prior 0.450); top-1 0.500 beats the majority class (margin +0.300, one seed "
        "so the noise is not measured; majority 0.200)."
    ]


def test_disagreeing_baselines_of_one_fraction_and_seed_keep_the_first():
    first = dict(
        _row("a", "freeze", 0.1, 0, 0.5), run_dir="cells/a", baselines=baselines_record(0.40, 0.3)
    )
    second = dict(
        _row("b", "freeze", 0.1, 0, 0.5), run_dir="cells/b", baselines=baselines_record(0.43, 0.3)
    )
    other_seed = dict(
        _row("b", "freeze", 0.1, 1, 0.5), run_dir="cells/c", baselines=baselines_record(0.47, 0.3)
    )
    old = dict(_row("c", "freeze", 0.1, 0, 0.5), run_dir="cells/d", baselines=None)
    logs = []
    table = baseline_rows([first, old, second, other_seed], log=logs.append)
    assert [(r["backbone"], r["seed"], r["run_dir"], r["mean_iou"]) for r in table] == [
        ("prior_box", 0, "cells/a", 0.40),
        ("majority_class", 0, "cells/a", None),
        ("prior_box", 1, "cells/c", 0.47),
        ("majority_class", 1, "cells/c", None),
    ]
    assert (
        len(logs) == 1
        and "cells/b and cells/a disagree on the prior_box baseline (mean_iou, loc_acc@0.5)"
        in logs[0]
    )
    assert baseline_rows([first, second]) == table[:2]  # without a log, silently


# The grid, end to end (tiny backbone, synthetic data)


def _counting(monkeypatch):
    calls = []
    real = compare.run_detect

    def counted(config, **kwargs):
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(compare, "run_detect", counted)
    return calls


def _offline_imagenet(monkeypatch):
    real = compare.resolve_backbone

    def resolve(config):
        if config.backbone == "imagenet":
            raise BackboneWeightsError(
                "ImageNet weights for tiny cannot be downloaded (no network)"
            )
        return real(config)

    monkeypatch.setattr(compare, "resolve_backbone", resolve)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished 3-backbone grid: scratch and ssl train, imagenet is unavailable."""
    root = tmp_path_factory.mktemp("compare")
    tiny_backbone(width=8).save(root / "encoder.keras")
    config = CompareConfig(
        backbones=f"scratch,ssl:{root},imagenet", out=str(root / "out"), **TINY
    ).validate()
    logs = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _counting(monkeypatch)
        _offline_imagenet(monkeypatch)
        summary = run_compare(config, log=logs.append)
    return config, summary, calls, logs


@pytest.mark.large
def test_grid_runs_cells_and_skips_unavailable_backbone(grid):
    config, summary, calls, logs = grid
    out = summary["out"]
    assert [c.backbone for c in calls] == ["scratch", config.labelled_backbones()[1][1]]
    assert [c["status"] for c in summary["cells"]] == ["trained", "trained", "skipped"]
    for label in ("scratch", "ssl"):
        assert os.path.isfile(
            os.path.join(out, "cells", label, "freeze", "frac0.5", "seed0", "metrics.json")
        )
    assert not os.path.exists(os.path.join(out, "cells", "imagenet"))
    reason = "ImageNet weights for tiny cannot be downloaded (no network)"
    assert summary["skipped"] == {"imagenet": reason}
    assert json.load(open(os.path.join(out, "skipped.json"))) == {"imagenet": reason}
    assert any("backbone imagenet (imagenet) is unavailable and skipped" in line for line in logs)
    assert (
        json.load(open(os.path.join(out, "compare.json")))["options"]["backbones"]
        == config.backbones
    )
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["backbone"] for r in rows] == ["scratch", "ssl", "prior_box", "majority_class"]
    assert list(rows[0]) == list(compare.CSV_COLUMNS)
    metrics = json.load(open(os.path.join(out, rows[1]["run_dir"], "metrics.json")))
    assert float(rows[1]["mean_iou"]) == pytest.approx(metrics["mean_iou"])
    assert float(rows[1]["mean_iou_margin"]) == pytest.approx(metrics["margins"]["mean_iou"])
    # The baseline rows come from the first cell of their fraction x seed, as detect scored them.
    first = json.load(open(os.path.join(out, rows[0]["run_dir"], "metrics.json")))["baselines"]
    assert rows[2]["run_dir"] == rows[0]["run_dir"]
    assert (
        float(rows[2]["mean_iou"]) == pytest.approx(first["prior_box"]["mean_iou"])
        and rows[2]["top1"] == ""
    )
    assert (
        float(rows[3]["top1"]) == pytest.approx(first["majority_class"]["top1"])
        and rows[3]["mean_iou"] == ""
    )
    assert [(e["backbone"], e["n"]) for e in summary["table"]] == [
        ("scratch", 1),
        ("ssl", 1),
        ("prior_box", 1),
        ("majority_class", 1),
    ]


@pytest.mark.large
def test_report_links_table_plots_and_skipped(grid):
    _, summary, _, _ = grid
    out = summary["out"]
    report = open(os.path.join(out, "report.md")).read()
    for link in ("(plot_mean_iou.png)", "(plot_loc_acc_0.5.png)", "(results.md)", "(results.csv)"):
        assert link in report
    for name in ("plot_mean_iou.png", "plot_loc_acc_0.5.png", "results.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert "| 50% | ssl | 1 |" in report
    assert (
        "- imagenet (`imagenet`, all its cells): ImageNet weights for tiny cannot be downloaded"
        in report
    )
    assert "freeze, 50% of the labels:" in report
    # Which sentence is right depends on whether a backbone beat the prior box in this tiny grid.
    margins = [
        e["mean_iou_margin"] for e in summary["table"] if e["backbone"] in ("ssl", "scratch")
    ]
    if any(m > 0 for m in margins):
        assert "one seed only" in report
    else:
        assert (
            "no backbone beats the constant prior box on mean IoU" in report
            and "so no backbone wins here" in report
        )
    assert "Unfinished cells" not in report


@pytest.mark.large
def test_the_grid_has_an_hparams_session_per_finished_cell(grid):
    from hparams_events import read_hparams_logs

    _, summary, _, _ = grid
    _, sessions, _ = read_hparams_logs(os.path.join(summary["out"], "logs"))
    cells = {
        f"{r['backbone']}/{r['mode']}/frac{r['label_fraction']}/seed{r['seed']}": r
        for r in summary["rows"]
    }
    assert cells and set(cells) <= set(sessions)
    for name, row in cells.items():
        assert sessions[name]["metrics"]["mean_iou"] == pytest.approx(row["mean_iou"])
    # The skipped backbone has no finished cell, so no session.
    assert not any(name.startswith("imagenet/") for name in sessions)


@pytest.mark.large
def test_rerun_skips_finished_cells_and_resumes_interrupted_one(grid, tmp_path, monkeypatch):
    config, summary, _, _ = grid
    out = tmp_path / "out"
    shutil.copytree(summary["out"], out)
    config = CompareConfig(**{**TINY, "backbones": config.backbones, "out": str(out)}).validate()
    finished = out / "cells" / "scratch" / "freeze" / "frac0.5" / "seed0" / "metrics.json"
    interrupted = out / "cells" / "ssl" / "freeze" / "frac0.5" / "seed0"
    before = (finished.stat().st_mtime_ns, finished.read_text())
    # Killed during its first epoch: config.json written, no checkpoint, no metrics.
    (interrupted / "metrics.json").unlink()
    shutil.rmtree(interrupted / "checkpoints")
    calls = _counting(monkeypatch)
    _offline_imagenet(monkeypatch)
    logs = []
    again = run_compare(config, log=logs.append)
    assert (
        len(calls) == 1
        and calls[0].resume
        and calls[0].out.endswith(os.path.join("ssl", "freeze", "frac0.5", "seed0"))
    )
    assert (finished.stat().st_mtime_ns, finished.read_text()) == before
    assert (interrupted / "metrics.json").is_file()
    assert [c["status"] for c in again["cells"]] == ["done", "resumed", "skipped"]
    assert any("scratch/freeze/frac0.5/seed0: done, skipped" in line for line in logs)
    assert any("continuing the comparison" in line for line in logs)


@pytest.mark.large
def test_gradcam_hook_is_called_and_linked(grid, tmp_path):
    config, summary, _, _ = grid
    out = tmp_path / "out"
    shutil.copytree(summary["out"], out)
    config = CompareConfig(**{**TINY, "backbones": config.backbones, "out": str(out)}).validate()
    seen = {}

    def gradcam(out_dir, cell_dirs):
        seen.update(cell_dirs)
        path = os.path.join(out_dir, "gradcam_grid.png")
        Image.new("RGB", (8, 8)).save(path)
        return path

    result = compare.summarize_compare(config, gradcam=gradcam, log=lambda line: None)
    assert sorted(seen) == [("scratch", "freeze", 0.5, 0), ("ssl", "freeze", 0.5, 0)]
    assert all(os.path.isfile(os.path.join(d, "metrics.json")) for d in seen.values())
    assert "![Grad-CAM grid](gradcam_grid.png)" in open(result["outputs"]["report"]).read()


@pytest.mark.large
def test_out_is_refused_unless_it_holds_the_same_comparison(grid, tmp_path):
    config, summary, _, _ = grid
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    with pytest.raises(RunDirectoryError, match="holds no compare.json"):
        run_compare(
            CompareConfig(**{**TINY, "backbones": "scratch", "out": str(stray)}).validate(),
            log=lambda s: None,
        )
    assert os.listdir(stray) == ["notes.txt"]
    other = CompareConfig(
        **{**TINY, "backbones": config.backbones, "out": summary["out"], "epochs": 2}
    ).validate()
    with pytest.raises(RunDirectoryError, match="epochs: 1 there, 2 now"):
        run_compare(other, log=lambda s: None)


def test_all_backbones_unavailable_is_an_error(tmp_path, monkeypatch):
    calls = _counting(monkeypatch)
    _offline_imagenet(monkeypatch)
    config = CompareConfig(
        **{
            **TINY,
            "backbones": "imagenet,ssl:" + str(tmp_path / "missing"),
            "out": str(tmp_path / "out"),
        }
    ).validate()
    with pytest.raises(
        BackboneWeightsError, match="no backbone of --backbones can be had"
    ) as error:
        run_compare(config, log=lambda s: None)
    assert "imagenet: ImageNet weights" in str(error.value) and "no such pretrain run" in str(
        error.value
    )
    assert calls == []
    assert set(json.load(open(tmp_path / "out" / "skipped.json"))) == {"imagenet", "ssl"}


@pytest.mark.large
def test_imagenet_from_a_local_weights_file_is_labelled_imagenet_and_loads_that_file(tmp_path):
    import keras

    from ssl_keras.runs.config import DetectConfig
    from ssl_keras.backbone import resolve_backbone

    network = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(None, None, 3), pooling="avg"
    )
    path = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    network.save_weights(path)
    assert backbone_label(f"imagenet:{path}") == ("imagenet", f"imagenet:{path}")
    config = DetectConfig(
        backbone=f"imagenet:{path}", backbone_name="MobileNetV3Small", image_size=32
    ).validate()
    backbone, description = resolve_backbone(config)
    assert "ImageNet weights from" in description and str(path) in description
    for loaded, saved in zip(backbone.get_weights(), network.get_weights()):
        np.testing.assert_array_equal(loaded, saved)
    missing = DetectConfig(
        backbone=f"imagenet:{tmp_path / 'none.h5'}", backbone_name="MobileNetV3Small", image_size=32
    ).validate()
    with pytest.raises(BackboneWeightsError, match="does not exist"):
        resolve_backbone(missing)
