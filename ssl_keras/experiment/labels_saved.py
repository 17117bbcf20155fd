"""How many labels does the reference backbone save: the label fraction another backbone needs to match it.

The comparison measures each backbone's metric at a few label fractions (say 10%, 25% and
100%). To say "SimCLR at 10% of the labels is worth scratch at 43%", the other backbone's
mean curve is read between its measured points: piecewise linear in log(fraction), which
is how label-efficiency curves are drawn and roughly how they behave. An answer outside the
measured fractions is given as a bound, never extrapolated.
"""

import collections
import math

import numpy as np

from ssl_keras.compare.compare import (
    METRIC_TITLES,
    is_baseline,
    metric_count,
    percent,
    within_noise,
)

# Short mode names for one-line sentences ("frozen: scratch needs ...").
MODE_NAMES = {
    "freeze": "frozen",
    "finetune": "fine-tuned",
    "freeze-then-finetune": "frozen, then fine-tuned",
}
BOUNDS = ("inside", "below", "above")
# Measured means are averages of floats; a curve that equals its target up to rounding reaches it.
_TOLERANCE = 1e-12

Match = collections.namedtuple("Match", ["fraction", "bound"])
Match.__doc__ = """The label fraction at which a curve reaches a target (`fraction_to_match`).

`fraction` is a float, or None when the curve never reaches the target; `bound` is `"inside"`
(interpolated between two measured fractions), `"below"` (reached at the smallest measured
fraction already: the answer is <= `fraction`) or `"above"` (not reached at the largest: the
answer is more than the largest measured fraction).
"""


def fraction_to_match(fractions, values, target):
    """The smallest label fraction at which a measured curve reaches `target`.

    Between two measured points the curve is linear in log(fraction). The crossing is the
    first one going up in fraction, so a curve that dips after reaching the target still
    answers with its first crossing, and a flat stretch at the target answers with its start.

    Args:
        fractions: label fractions in (0, 1] at which the curve is measured, distinct; they
            are sorted here.
        values: the curve's values (e.g. mean IoU over seeds), one per fraction.
        target: float, the value to reach (e.g. the reference backbone's mean at 10%).

    Returns:
        A `Match(fraction, bound)`: `bound="inside"` with the interpolated fraction;
        `"below"` with the smallest measured fraction when that point already reaches the
        target (the true answer is at most that); `"above"` with `fraction=None` when no
        measured point reaches it (the answer is more than the largest fraction measured).

    Raises:
        ValueError: the lists are empty, of different lengths, hold a repeated fraction, a
            fraction outside (0, 1] or a value that is not a finite number.

    Example:

    >>> fraction_to_match([0.1, 1.0], [0.3, 0.5], 0.4)  # halfway in log: sqrt(0.1 * 1.0)
    Match(fraction=0.316..., bound='inside')
    >>> fraction_to_match([0.1, 1.0], [0.3, 0.5], 0.2)
    Match(fraction=0.1, bound='below')
    >>> fraction_to_match([0.1, 1.0], [0.3, 0.5], 0.6)
    Match(fraction=None, bound='above')
    """
    fractions, values = list(fractions), list(values)
    if not fractions or len(fractions) != len(values):
        raise ValueError(
            f"fraction_to_match needs one value per label fraction, at least one; got "
            f"{len(fractions)} fractions and {len(values)} values. Received: fractions={fractions!r}, "
            f"values={values!r}"
        )
    if len(set(fractions)) != len(fractions):
        raise ValueError(
            f"fraction_to_match: the label fractions must be distinct (average the repeated ones "
            f"first). Received: fractions={fractions!r}"
        )
    for fraction, value in zip(fractions, values):
        if not (isinstance(fraction, (int, float, np.number)) and 0 < fraction <= 1):
            raise ValueError(
                f"fraction_to_match: label fractions must be numbers in (0, 1]. "
                f"Received: fraction={fraction!r}"
            )
        if not (isinstance(value, (int, float, np.number)) and math.isfinite(value)):
            raise ValueError(
                f"fraction_to_match: the curve at {fraction!r} is not a finite number; drop that "
                f"point. Received: value={value!r}"
            )
    if not (isinstance(target, (int, float, np.number)) and math.isfinite(target)):
        raise ValueError(
            f"fraction_to_match: the target must be a finite number. Received: target={target!r}"
        )
    points = sorted((float(f), float(v)) for f, v in zip(fractions, values))
    if points[0][1] >= target - _TOLERANCE:
        return Match(points[0][0], "below")
    for (f0, v0), (f1, v1) in zip(points, points[1:]):
        if v1 >= target - _TOLERANCE:
            # v0 < target <= v1 here, so v1 > v0 and the step is well defined.
            step = min(max((target - v0) / (v1 - v0), 0.0), 1.0)
            return Match(
                float(math.exp(math.log(f0) + step * (math.log(f1) - math.log(f0)))), "inside"
            )
    return Match(None, "above")


def _fraction_text(fraction):
    """0.43 -> "0.43", 0.125 -> "0.12", 1.0 -> "1"."""
    return f"{fraction:.2g}"


def _percent_text(fraction):
    """Two significant digits: 0.4518 -> "45%", 0.043 -> "4.3%", 1.0 -> "100%"."""
    value = fraction * 100
    return f"{value:.0f}%" if value >= 10 else f"{value:.2g}%"


def _ratio_text(ratio, *, sign="x"):
    """4.518 -> "4.5x", 12.3 -> "12x", 0.4 -> "0.4x"."""
    return f"{ratio:.0f}{sign}" if ratio >= 10 else f"{ratio:.2g}{sign}"


def _mean_text(mean, std, n):
    if mean is None:
        return "—"
    if n is not None and n > 1:
        return f"{mean:.3f} ± {std:.3f} (n = {n})"
    return f"{mean:.3f} (n = {n})"


def _label_fractions(at):
    """`at` as a list of label fractions, each checked to be in (0, 1]."""
    at = [at] if isinstance(at, (int, float, np.number)) else list(at)
    for fraction in at:
        if not (isinstance(fraction, (int, float, np.number)) and 0 < fraction <= 1):
            raise ValueError(
                f"labels_saved: `at` must hold label fractions in (0, 1], e.g. [0.1, 0.25]. "
                f"Received: at={at!r}"
            )
    return at


def _mode_rows(trained, mode, *, reference, at, metric):
    """`labels_saved`'s rows of one mode: each fraction of `at` the reference has, × every other backbone."""
    curves = {}
    for e in trained:
        if e["mode"] == mode:
            curves.setdefault(e["backbone"], {})[float(e["label_fraction"])] = e
    if reference not in curves:
        return []
    rows = []
    for fraction in at:
        fraction = float(fraction)
        target = _at(curves[reference], fraction)
        if target is None:
            continue
        for other, curve in curves.items():
            if other != reference:
                rows.append(_row(mode, metric, reference, target, other, curve, fraction))
    return rows


def labels_saved(table, *, reference, at, metric="mean_iou", modes=None):
    """How many labels the reference backbone saves against every other trained backbone.

    For each mode, each fraction `f` of `at` at which the reference was measured, and each
    other backbone measured in that mode, the reference's mean at `f` is the target, and
    `fraction_to_match` reads off the fraction of the labels at which the other backbone's
    mean curve reaches it. The baseline rows of the table (`compare.is_baseline`) are not
    backbones and are ignored. A fraction of `at` that the reference has not measured in a
    mode (e.g. a grid still running) gives no row.

    Whether the reference and the other backbone differ at `f` beyond seed noise follows
    `compare.within_noise`: the difference of the means is within noise when it is not larger
    than the larger of the two sample standard deviations over seeds.

    Args:
        table: list of dicts, as returned by `compare.aggregate` (the `table` of
            `compare.summarize_compare`).
        reference: string, the backbone whose label efficiency is measured, e.g. `"ssl"`.
        at: a label fraction or a list of them, e.g. `[0.1, 0.25]`.
        metric: string, the metric compared, a key of the table. Defaults to `"mean_iou"`.
        modes: None (every mode of the table, in its order), or a list or comma-separated
            string of modes. Defaults to None.

    Returns:
        A list of dicts, one per mode × fraction of `at` × other backbone, with `mode`,
        `metric`, `reference`, `other`, `at` (the fraction f), `reference_mean`,
        `reference_std`, `reference_n` (the reference at f), `other_mean`, `other_std`,
        `other_n` (the other backbone at f; None where it was not measured at f),
        `fraction_needed` (float or None), `bound` ("inside", "below" or "above", see
        `fraction_to_match`), `ratio` (`fraction_needed / f`: how many times the labels;
        None when "above"; for "below" an upper bound), `other_better` (True when the other
        backbone's mean at f is higher than the reference's, so the reference saves no
        labels against it; None when not measured at f), `within_noise` (True or False;
        None when either side has one seed or the other was not measured at f) and `text`,
        one sentence.

    Raises:
        ValueError: `at` holds a number outside (0, 1], `reference` is not a backbone of a
            non-empty table, or no backbone of the table has `metric`.

    Example:

    >>> rows = [{"backbone": b, "mode": "freeze", "label_fraction": f, "seed": 0,
    ...          "num_train_images": 10, "mean_iou": v}
    ...         for b, f, v in [("ssl", 0.1, 0.431), ("scratch", 0.1, 0.30), ("scratch", 1.0, 0.50)]]
    >>> from ssl_keras.compare.compare import aggregate
    >>> row, = labels_saved(aggregate(rows), reference="ssl", at=[0.1])
    >>> row["fraction_needed"], row["bound"]  # 10 ** (-1 + (0.431 - 0.30) / (0.50 - 0.30))
    (0.4518..., 'inside')
    >>> row["text"]
    'frozen: scratch needs 0.45 of the labels (4.5x) to match ssl at 10% (mean IoU 0.431) — n = 1, noise not measured'
    """
    at = _label_fractions(at)
    trained = [e for e in table if not is_baseline(e)]
    if not trained:
        return []
    backbones = list(dict.fromkeys(e["backbone"] for e in trained))
    if reference not in backbones:
        raise ValueError(
            f"labels_saved: the reference {reference!r} is not a backbone of the table; use one of "
            f"{', '.join(backbones)}. Received: reference={reference!r}"
        )
    trained = [e for e in trained if metric in e]
    if not trained:
        raise ValueError(
            f"labels_saved: no backbone of the table has {metric!r} (cells that predate it?); "
            f"use a metric the table holds, e.g. mean_iou. Received: metric={metric!r}"
        )
    if modes is None:
        modes = list(dict.fromkeys(e["mode"] for e in trained))
    elif isinstance(modes, str):
        modes = [part.strip() for part in modes.split(",") if part.strip()]

    return [
        row
        for mode in modes
        for row in _mode_rows(trained, mode, reference=reference, at=at, metric=metric)
    ]


def _at(curve, fraction):
    """The entry of `curve` ({fraction: entry}) measured at `fraction`, matched up to rounding."""
    for measured, entry in curve.items():
        if math.isclose(measured, fraction, rel_tol=1e-9, abs_tol=1e-12):
            return entry
    return None


def _row(mode, metric, reference, target, other, curve, fraction):
    fractions = sorted(curve)
    match = fraction_to_match(fractions, [curve[f][metric] for f in fractions], target[metric])
    same = _at(curve, fraction)
    ref_mean, ref_n = target[metric], metric_count(target, metric)
    row = {
        "mode": mode,
        "metric": metric,
        "reference": reference,
        "other": other,
        "at": fraction,
        "reference_mean": ref_mean,
        "reference_std": target[metric + "_std"] if ref_n > 1 else None,
        "reference_n": ref_n,
        "other_mean": None,
        "other_std": None,
        "other_n": None,
        "fraction_needed": match.fraction,
        "bound": match.bound,
        "ratio": None if match.fraction is None else match.fraction / fraction,
        "other_better": None,
        "within_noise": None,
    }
    if same is not None:
        other_n = metric_count(same, metric)
        row.update(
            other_mean=same[metric],
            other_std=same[metric + "_std"] if other_n > 1 else None,
            other_n=other_n,
            other_better=bool(same[metric] > ref_mean),
            within_noise=within_noise(target, same, metric=metric),
        )
    row["text"] = _text(row, smallest=fractions[0], largest=fractions[-1])
    return row


def _text(row, *, smallest, largest):
    mode = MODE_NAMES.get(row["mode"], row["mode"])
    title = METRIC_TITLES.get(row["metric"], row["metric"])
    other, reference, at = row["other"], row["reference"], percent(row["at"])
    if row["bound"] == "inside":
        needs = (
            f"{_fraction_text(row['fraction_needed'])} of the labels ({_ratio_text(row['ratio'])})"
        )
    else:
        needs = f"<= {percent(smallest)} of the labels (the smallest fraction measured)"
    if row["other_better"]:
        # Measured at `at` and above the target there, so the curve crosses at or before `at`.
        text = (
            f"{mode}: {other} is better than {reference} at {at} ({title} {row['other_mean']:.3f} vs "
            f"{row['reference_mean']:.3f}), so {reference} saves no labels against it; {other} matches it "
            f"with {needs}"
        )
    elif row["bound"] == "inside":
        text = f"{mode}: {other} needs {needs} to match {reference} at {at} ({title} {row['reference_mean']:.3f})"
    elif row["bound"] == "below":
        text = (
            f"{mode}: {other} already matches {reference} at {at} ({title} {row['reference_mean']:.3f}) "
            f"with {needs}"
        )
    else:
        text = (
            f"{mode}: {other} would need more than {percent(largest)} of the labels to match {reference} at "
            f"{at} ({title} {row['reference_mean']:.3f}; outside the measured range)"
        )
    if row["within_noise"] is True:
        text += " — within noise"
    elif row["other_mean"] is None:
        text += f" — {other} not measured at {at}, noise not compared"
    elif row["within_noise"] is None:
        text += " — n = 1, noise not measured"
    return text


def format_labels_saved_md(rows):
    """A markdown table of `labels_saved` rows, with a line on how to read it.

    Args:
        rows: list of dicts from `labels_saved`.

    Returns:
        A string: the table (one line per row) and a note, ending with a newline; a sentence
        saying that there is nothing to compare when `rows` is empty.

    Example:

    >>> print(format_labels_saved_md(labels_saved(table, reference="ssl", at=[0.1])))
    """
    if not rows:
        return "No labels-saved comparison: the reference backbone has no finished cell at the fractions asked.\n"
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    shown = " / ".join(METRIC_TITLES.get(m, m) for m in metrics)
    lines = [
        "| mode | labels | reference | reference "
        + shown
        + " | other | other "
        + shown
        + " at the same labels | labels the other needs | × labels | noise |",
        "|---|---:|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        if row["bound"] == "inside":
            needed, ratio = (
                _percent_text(row["fraction_needed"]),
                _ratio_text(row["ratio"], sign="×"),
            )
        elif row["bound"] == "below":
            needed, ratio = (
                "≤ " + percent(row["fraction_needed"]),
                "≤ " + _ratio_text(row["ratio"], sign="×"),
            )
        else:
            needed, ratio = "> measured range", "—"
        if row["within_noise"] is True:
            noise = "within noise"
        elif row["within_noise"] is False:
            noise = "beyond noise"
        elif row["other_mean"] is None:
            noise = "not compared"
        else:
            noise = "n = 1, not measured"
        if row["other_better"]:
            noise += "; other is better"
        reference = _mean_text(row["reference_mean"], row["reference_std"], row["reference_n"])
        other = _mean_text(row["other_mean"], row["other_std"], row["other_n"])
        lines.append(
            f"| {row['mode']} | {percent(row['at'])} | {row['reference']} | {reference} | {row['other']} | "
            f"{other} | {needed} | {ratio} | {noise} |"
        )
    lines += [
        "",
        "Labels the other needs: the label fraction at which the other backbone's mean curve reaches the "
        "reference's mean, linear in log(fraction) between the measured fractions; ≤ and > mark answers "
        "outside the measured range (never extrapolated). × labels: that fraction over the reference's. "
        "Noise: whether the two means at the same labels differ by more than the larger sample std over "
        "seeds (mean ± std, n seeds).",
    ]
    return "\n".join(lines) + "\n"


def headline(rows):
    """A few short lines for the end of a run, each starting "labels saved:".

    Args:
        rows: list of dicts from `labels_saved`.

    Returns:
        A list of strings: one per row (its `text`), or one line saying there is nothing to
        compare when `rows` is empty.

    Example:

    >>> for line in headline(labels_saved(table, reference="ssl", at=[0.1])):
    ...     print(line)
    labels saved: frozen: scratch needs 0.45 of the labels (4.5x) to match ssl at 10% (mean IoU 0.431) — n = 1, ...
    """
    if not rows:
        return [
            "labels saved: nothing to compare yet (the reference has no finished cell at the fractions asked)"
        ]
    return [f"labels saved: {row['text']}" for row in rows]
