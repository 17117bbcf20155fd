"""`run_compare`: a resumable grid of detect runs over backbones × label fractions × modes × seeds.

Output layout:

```
OUT/compare.json                  the grid's options, written before anything trains
OUT/cells/{label}/{mode}/frac{fraction}/seed{seed}/
                                  one ordinary detect run directory per cell
OUT/skipped.json                  {label: reason} for backbones that cannot be had
OUT/results.csv                   one row per finished cell, then the baseline rows
OUT/results.md                    mean ± std over seeds per backbone × mode × fraction (the mean
                                  alone for a single seed), with the baselines and each
                                  backbone's margin over them
OUT/plot_mean_iou.png             metric vs label fraction (log), one subplot per mode, shared y
OUT/plot_loc_acc_0.5.png
OUT/report.md                     grid, findings, table, plots, skipped backbones, Grad-CAM
OUT/logs/                         TensorBoard's HParams view of the grid: one session per row of
                                  results.csv, `tensorboard --logdir OUT/logs`
```

A cell is finished when its `metrics.json` exists (detect writes it last). Running the same
grid again on the same OUT skips finished cells, resumes cells that hold a `config.json`, and
trains the rest, so an interrupted comparison is continued by repeating the command.

Every output also shows the trivial baselines of `ssl_keras.localization.box_baselines`, read from the
cells' metrics.json: `prior_box` (one constant box) and `majority_class` (always the most
frequent classes), both fitted on the cell's labelled training subset without looking at an
image. They depend on the label fraction and seed but not on the backbone, so they form one
row per mode × fraction × seed, under the backbone names `prior_box` and `majority_class`.
Cells written before the baselines existed are read as before, without them.
"""

import csv
import datetime
import io
import os
import re
import time

import keras
import numpy as np

from ssl_keras.backbone import BackboneWeightsError, resolve_backbone
from ssl_keras.localization.box_baselines import (
    BOX_METRICS,
    CLASS_METRICS,
    MAJORITY_CLASS,
    PRIOR_BOX,
)
from ssl_keras.compare.compare_config import (  # noqa: F401 - the grid's names, re-exported
    LABEL_PATTERN,
    METRICS,
    Cell,
    CompareConfig,
    backbone_label,
    cell_config,
    grid_cells,
)
from ssl_keras.runs.config import to_dict
from ssl_keras.localization.detect import run_detect
from ssl_keras.runs.run_directory import (
    RunDirectoryError,
    RunLock,
    environment_info,
    make_directory,
    read_json,
    write_file_atomic,
    write_json_atomic,
    write_text_atomic,
)
from ssl_keras.runs.hparams import write_hparams_logs

METRIC_TITLES = {
    "mean_iou": "mean IoU",
    "loc_acc@0.5": "loc acc@0.5",
    "loc_acc@0.7": "loc acc@0.7",
    "top1": "top-1",
    "top3": "top-3",
    "cls_loc_acc@0.5": "cls+loc acc@0.5",
    "balanced_top1": "balanced top-1",
}
MARGIN_SUFFIX = "_margin"
# A model's lead over the baseline of the same cell, per seed: box metrics over prior_box,
# class metrics over majority_class (see `ssl_keras.localization.box_baselines.margins`).
MARGIN_METRICS = ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3")
MARGINS = tuple(metric + MARGIN_SUFFIX for metric in MARGIN_METRICS)
# Everything `aggregate` averages over seeds; the baseline rows hold only their own metrics.
AGGREGATED = METRICS + ("balanced_top1",) + MARGINS
CSV_COLUMNS = (
    ("backbone", "mode", "label_fraction", "seed", "num_train_images")
    + METRICS
    + ("balanced_top1",)
    + MARGINS
    + ("num_test_images", "wall_seconds", "run_dir")
)
BASELINES = (PRIOR_BOX, MAJORITY_CLASS)
BASELINE_METRICS = {PRIOR_BOX: BOX_METRICS, MAJORITY_CLASS: CLASS_METRICS}
BASELINE_TITLES = {PRIOR_BOX: "the constant prior box", MAJORITY_CLASS: "the majority class"}
BASELINE_PLOT_LABELS = {
    PRIOR_BOX: "prior box (no image)",
    MAJORITY_CLASS: "majority class (no image)",
}
# results.md: the margins shown beside each backbone's metrics, as (margin key, column title).
MARGIN_COLUMNS = (
    ("mean_iou_margin", "Δ IoU vs prior"),
    ("loc_acc@0.5_margin", "Δ LocAcc@0.5 vs prior"),
    ("top1_margin", "Δ top-1 vs majority"),
)
BASELINES_NOTE = (
    "Baselines: `prior_box` predicts one constant box for every image (the box with the best mean IoU "
    "over the training boxes) and `majority_class` always predicts the most frequent training classes. "
    "Both are fitted on each cell's labelled training subset, so they change with the label fraction and "
    "seed, and never look at an image; a backbone has learned something about the images only where it "
    "beats them. A margin is the backbone's metric minus the baseline's on the same test images, per seed."
)
PLOTTED_METRICS = ("mean_iou", "loc_acc@0.5")
MODE_TITLES = {
    "freeze": "frozen backbone",
    "finetune": "fine-tuned",
    "freeze-then-finetune": "frozen, then fine-tuned",
}
GRADCAM_FILE = "gradcam_grid.png"
HPARAMS_FOLDER = "logs"


def run_cell(config, *, verbose=0, log=print, resume_hint=None):
    """Runs one cell's detect run (in this process or a worker) and frees its graphs."""
    try:
        return run_detect(config, verbose=verbose, log=log, resume_hint=resume_hint)
    finally:
        # Each cell builds a new model; without this, graphs pile up over a long grid.
        keras.backend.clear_session()


def _run_cells_in_workers(todo, workers, *, start, done, unavailable, names, verbose, hint, log):
    from ssl_keras.runs.parallel_runs import run_parallel

    by_key = {cell.key: cell for cell in todo}

    def prepare(key):
        cell_options = start(by_key[key])
        if cell_options is None:
            return None
        return "ssl_keras.compare.compare:run_cell", dict(
            config=cell_options, verbose=verbose, resume_hint=hint
        )

    def on_error(key, error):
        if isinstance(error, BackboneWeightsError):
            unavailable(by_key[key], error)
            return True
        return False

    run_parallel(
        list(by_key),
        workers=workers,
        prepare=prepare,
        on_error=on_error,
        on_log=lambda key, line: log(f"  [{names[key].split(' ')[1]}] {line}"),
        on_done=lambda key, metrics: done(by_key[key], metrics),
    )


def _skipped_backbones(config, out, cells, finished, log):
    """`{label: reason}` of the backbones the unfinished cells cannot have, also written to skipped.json.

    Raises:
        BackboneWeightsError: no backbone can be had and no cell is finished, so nothing can run.
    """
    skipped = _unavailable_backbones(config, [cell for cell in cells if not finished(cell)], log)
    write_json_atomic(os.path.join(out, "skipped.json"), skipped)
    if skipped and not any(finished(cell) or cell.label not in skipped for cell in cells):
        raise BackboneWeightsError(
            "no backbone of --backbones can be had, so nothing can run: "
            + "; ".join(f"{label}: {reason}" for label, reason in skipped.items())
            + f" (also in {os.path.join(out, 'skipped.json')})"
        )
    return skipped


def _cells_to_run(cells, finished, skipped, names, log):
    """`(statuses, todo)`: the finished and skipped cells' statuses, logged, and the cells left to train."""
    statuses = {}
    todo = []
    for cell in cells:
        if finished(cell):
            log(f"{names[cell.key]}: done, skipped")
            statuses[cell.key] = "done"
        elif cell.label in skipped:
            log(f"{names[cell.key]}: backbone unavailable, skipped")
            statuses[cell.key] = "skipped"
        else:
            todo.append(cell)
    return statuses, todo


def _run_cells_here(todo, *, start, done, unavailable, verbose, hint, log):
    """Trains the cells one after another in this process (`run_compare`'s callbacks say what to log)."""
    for cell in todo:
        cell_options = start(cell)
        if cell_options is None:
            continue
        try:
            metrics = run_cell(cell_options, verbose=verbose, log=log, resume_hint=hint)
        except BackboneWeightsError as error:
            unavailable(cell, error)
            continue
        done(cell, metrics)


def _cell_callbacks(config, out, skipped, statuses, names, log):
    """`run_compare`'s `(start, done, unavailable)` callbacks, which keep `skipped` and `statuses`.

    `start(cell)` gives the cell's `DetectConfig` (None: its backbone has become unavailable),
    `done(cell, metrics)` logs its result, `unavailable(cell, error)` skips its backbone.
    """

    def start(cell):
        # Asked just before a cell trains: an earlier cell may have found its backbone missing.
        if cell.label in skipped:
            log(f"{names[cell.key]}: backbone unavailable, skipped")
            statuses[cell.key] = "skipped"
            return None
        resume = os.path.isfile(os.path.join(out, cell.run_dir, "config.json"))
        statuses[cell.key] = "resumed" if resume else "trained"
        log(f"{names[cell.key]}: {'resuming' if resume else 'training'}")
        return cell_config(config, cell, resume=resume)

    def done(cell, metrics):
        log(
            f"{names[cell.key]}: mean IoU {metrics['mean_iou']:.4f}, loc acc@0.5 {metrics['loc_acc@0.5']:.4f} "
            f"({metrics['wall_seconds']:.0f} s)"
        )

    def unavailable(cell, error):
        skipped[cell.label] = str(error)
        write_json_atomic(os.path.join(out, "skipped.json"), skipped)
        log(
            f"{names[cell.key]}: backbone {cell.label} unavailable ({error}); its remaining cells are skipped"
        )
        _remove_if_empty(os.path.join(out, cell.run_dir))
        statuses[cell.key] = "skipped"

    return start, done, unavailable


def _cell_summaries(cells, out, statuses):
    """`run_compare`'s `cells`: one dict per cell, with its absolute run directory and status."""
    return [
        dict(
            backbone=cell.label,
            spec=cell.spec,
            mode=cell.mode,
            label_fraction=cell.label_fraction,
            seed=cell.seed,
            run_dir=os.path.join(out, cell.run_dir),
            status=statuses[cell.key],
        )
        for cell in cells
    ]


def run_compare(
    config: CompareConfig, *, log=print, verbose=0, gradcam=None, resume_hint=None, workers=1
):
    """Runs (or continues) the grid of detect runs and writes the tables, plots and report.

    Args:
        config: a validated `CompareConfig`.
        log: callable taking one string, for progress lines. Defaults to `print`.
        verbose: int, Keras `fit` verbosity of each cell. Defaults to 0.
        gradcam: None, or a callable `gradcam(out_dir, cell_dirs)` returning the path of an
            image to link from the report (or None); `cell_dirs` maps `(label, mode,
            label_fraction, seed)` to the absolute run directory of every finished cell.
            Without it, `OUT/gradcam_grid.png` is linked if it exists. Defaults to None.
        resume_hint: str, how to continue after an interruption, for the message. Defaults to
            running the same `ssl-keras compare` command again.
        workers: int, cells trained at once, each in its own process (see
            `ssl_keras.runs.parallel_runs`). The results do not depend on it. Defaults to 1 (in this
            process).

    Returns:
        A dict: `out`, `cells` (one dict per cell with its `status`: done, trained, resumed or
        skipped), `skipped` ({label: reason}), `rows` and `baseline_rows` (results.csv's rows),
        `table` (see `aggregate`, baselines included), `findings` (`describe_results`, then
        `describe_baselines`), `wall_seconds` and `outputs` (paths of the files written).

    Example:

    >>> config = CompareConfig(data="synthetic:160", backbones="ssl:runs/p1,scratch", seeds=2,
    ...                        label_fractions="0.1,1", modes="freeze,finetune").validate()
    >>> summary = run_compare(config)
    """
    started = time.perf_counter()
    config.validate()
    out = prepare_compare_directory(config, log=log)
    with RunLock(out, command="compare"):  # a second compare on this --out is refused
        cells = grid_cells(config)
        finished = lambda cell: os.path.isfile(os.path.join(out, cell.run_dir, "metrics.json"))
        skipped = _skipped_backbones(config, out, cells, finished, log)

        hint = resume_hint or "the same ssl-keras compare command again (finished cells are kept)"
        names = {
            cell.key: f"[compare] {index}/{len(cells)} {cell.run_dir[len('cells/') :]}"
            for index, cell in enumerate(cells, start=1)
        }
        statuses, todo = _cells_to_run(cells, finished, skipped, names, log)

        start, done, unavailable = _cell_callbacks(config, out, skipped, statuses, names, log)

        if workers > 1 and len(todo) > 1:
            _run_cells_in_workers(
                todo,
                workers,
                start=start,
                done=done,
                unavailable=unavailable,
                names=names,
                verbose=verbose,
                hint=hint,
                log=log,
            )
        else:
            _run_cells_here(
                todo,
                start=start,
                done=done,
                unavailable=unavailable,
                verbose=verbose,
                hint=hint,
                log=log,
            )

        summary = summarize_compare(config, skipped=skipped, gradcam=gradcam, log=log)
        summary["cells"] = _cell_summaries(cells, out, statuses)
        summary["wall_seconds"] = time.perf_counter() - started
        return summary


def prepare_compare_directory(config, *, log=print):
    """Creates `out` and writes compare.json, or checks that `out` holds the same grid to continue.

    Raises:
        RunDirectoryError: `out` is a file, is non-empty without a compare.json, or holds a
            compare run with other options.
    """
    out = os.path.abspath(os.fspath(config.out))
    record_path = os.path.join(out, "compare.json")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirectoryError(f"--out {out} is a file, not a directory; choose another --out")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(record_path):
            raise RunDirectoryError(
                f"--out {out} exists, is not empty and holds no compare.json, so it is not a comparison to "
                "continue; choose a new --out (nothing there was changed)"
            )
        stored = read_json(record_path).get("options", {})
        given = to_dict(config)
        differences = [
            f"{key}: {stored.get(key)!r} there, {given.get(key)!r} now"
            for key in sorted(set(stored) | set(given))
            if key != "out" and stored.get(key) != given.get(key)
        ]
        if differences:
            raise RunDirectoryError(
                f"--out {out} holds a comparison with other options ({'; '.join(differences)}); repeat its "
                "options to continue it, or choose a new --out (nothing there was changed)"
            )
        log(f"[compare] continuing the comparison in {out}")
        return out
    make_directory(out)
    cells = grid_cells(config)
    write_json_atomic(
        record_path,
        {
            "command": "compare",
            "options": to_dict(config),
            "grid": {
                "backbones": dict(config.labelled_backbones()),
                "modes": list(config.modes),
                "label_fractions": list(config.label_fractions),
                "seeds": list(range(config.seeds)),
                "num_cells": len(cells),
            },
            "environment": environment_info(),
        },
    )
    log(f"[compare] {len(cells)} cells in {out}")
    return out


def _unavailable_backbones(config, pending, log):
    """{label: reason} for every backbone with unfinished cells that cannot be built now."""
    skipped = {}
    for label, spec in config.labelled_backbones():
        cells = [cell for cell in pending if cell.label == label]
        if not cells:
            continue
        try:
            resolve_backbone(cell_config(config, cells[0]))
        # ValueError: e.g. imagenet weights asked of a backbone that has none (tiny).
        except (BackboneWeightsError, ValueError) as error:
            skipped[label] = str(error)
            log(f"[compare] backbone {label} ({spec}) is unavailable and skipped: {error}")
        finally:
            keras.backend.clear_session()
    return skipped


def _remove_if_empty(path):
    if os.path.isdir(path) and not os.listdir(path):
        os.rmdir(path)


def collect_rows(config):
    """One dict per finished cell (CSV_COLUMNS), read from the cells' metrics.json, in grid order.

    `balanced_top1` and the margin columns are None where the cell's metrics.json predates
    them. Each row also keeps the cell's scored baselines under `baselines` (None when absent;
    not a CSV column), from which `baseline_rows` builds the baseline rows.
    """
    out = os.path.abspath(os.fspath(config.out))
    rows = []
    for cell in grid_cells(config):
        path = os.path.join(out, cell.run_dir, "metrics.json")
        if not os.path.isfile(path):
            continue
        metrics = read_json(path)
        row = {
            "backbone": cell.label,
            "mode": cell.mode,
            "label_fraction": cell.label_fraction,
            "seed": cell.seed,
            "num_train_images": metrics["num_train_images"],
            "num_test_images": metrics["num_test_images"],
            "wall_seconds": _cell_wall_seconds(os.path.join(out, cell.run_dir), metrics),
            "run_dir": cell.run_dir,
        }
        row.update(
            {metric: _number(metrics.get(metric)) for metric in METRICS + ("balanced_top1",)}
        )
        margins = metrics.get("margins") or {}
        row.update(
            {metric + MARGIN_SUFFIX: _number(margins.get(metric)) for metric in MARGIN_METRICS}
        )
        row["baselines"] = metrics.get("baselines")
        rows.append(row)
    return rows


def _number(value):
    return None if value is None else float(value)


def _present(value):
    """A metric cell holds a value: not None, and not the empty string of a results.csv cell."""
    return value is not None and value != ""


def baseline_rows(rows, *, log=None):
    """The baseline rows of results.csv: `prior_box` and `majority_class` per mode × fraction × seed.

    The baselines are fitted on the labelled training subset, which the label fraction and seed
    fix, so every backbone's cell of a mode × fraction × seed holds the same ones; the first
    cell (in grid order) that has them gives the row. Should another cell disagree, the first
    is kept and the disagreement is logged.

    Args:
        rows: dicts from `collect_rows` (cells without `baselines` are passed over).
        log: None, or a callable taking one string, told of disagreeing cells. Defaults to None.

    Returns:
        A list of dicts with the CSV_COLUMNS: for each group, first its `prior_box` row (the
        box metrics; the class metrics and margins None), then its `majority_class` row (top1,
        top3, balanced_top1; the box metrics None). `run_dir` is the cell they were read from.
    """
    kept = {}
    for row in rows:
        scored = row.get("baselines")
        if not scored:
            continue
        key = (row["mode"], float(row["label_fraction"]), int(row["seed"]))
        if key not in kept:
            kept[key] = (row, scored)
            continue
        first_row, first = kept[key]
        for name in BASELINES:
            differing = [
                metric
                for metric in BASELINE_METRICS[name]
                if not _same_number(
                    (first.get(name) or {}).get(metric), (scored.get(name) or {}).get(metric)
                )
            ]
            if differing and log is not None:
                log(
                    f"[compare] {row['run_dir']} and {first_row['run_dir']} disagree on the {name} baseline "
                    f"({', '.join(differing)}), though both are fitted on the same labelled subset; "
                    f"results.csv keeps the first ({first_row['run_dir']})"
                )
    table = []
    for (mode, fraction, seed), (row, scored) in kept.items():
        for name in BASELINES:
            values = scored.get(name) or {}
            entry = {column: None for column in CSV_COLUMNS}
            entry.update(
                backbone=name,
                mode=mode,
                label_fraction=fraction,
                seed=seed,
                num_train_images=row["num_train_images"],
                num_test_images=row["num_test_images"],
                run_dir=row["run_dir"],
            )
            entry.update({metric: _number(values.get(metric)) for metric in BASELINE_METRICS[name]})
            table.append(entry)
    return table


def _same_number(a, b):
    if not (_present(a) and _present(b)):
        return _present(a) == _present(b)
    return bool(np.isclose(float(a), float(b), rtol=0.0, atol=1e-9, equal_nan=True))


def _cell_wall_seconds(run_dir, metrics):
    """Cells keep their wall time in timing.json (older runs: in metrics.json)."""
    timing = os.path.join(run_dir, "timing.json")
    if os.path.isfile(timing):
        return read_json(timing)["wall_seconds"]
    return metrics.get("wall_seconds", float("nan"))


def write_results_csv(rows, path):
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def aggregate(rows):
    """Mean and sample standard deviation over seeds per backbone × mode × label fraction.

    Args:
        rows: dicts with `backbone`, `mode`, `label_fraction`, `seed`, `num_train_images` and
            the AGGREGATED metrics (as in results.csv); a metric that is None or empty is
            missing from that row. Baseline rows (`baseline_rows`) are aggregated alike.

    Returns:
        A list of dicts, sorted by mode, fraction and backbone (modes and backbones in order of
        first appearance, the baselines last): `backbone`, `mode`, `label_fraction`, `n`,
        `seeds`, `num_train_images` (mean), and for each metric `m` that some member holds, `m`
        (mean over the members that hold it), `m_std` (standard deviation with ddof=1; 0.0
        when only one value, where no spread is measured) and `m_n` (how many members hold
        it: `n`, unless some cells predate the metric).
    """
    groups = {}
    for row in rows:
        groups.setdefault((row["backbone"], row["mode"], float(row["label_fraction"])), []).append(
            row
        )
    mode_order = list(dict.fromkeys(row["mode"] for row in rows))
    backbone_order = list(dict.fromkeys(row["backbone"] for row in rows))
    table = []
    for (backbone, mode, fraction), members in groups.items():
        entry = {
            "backbone": backbone,
            "mode": mode,
            "label_fraction": fraction,
            "n": len(members),
            "seeds": sorted(int(m["seed"]) for m in members),
            "num_train_images": float(np.mean([float(m["num_train_images"]) for m in members])),
        }
        for metric in AGGREGATED:
            values = np.asarray([float(m[metric]) for m in members if _present(m.get(metric))])
            if not len(values):
                continue
            entry[metric] = float(values.mean())
            entry[metric + "_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[metric + "_n"] = int(len(values))
        table.append(entry)
    table.sort(
        key=lambda e: (
            mode_order.index(e["mode"]),
            e["label_fraction"],
            e["backbone"] in BASELINES,
            backbone_order.index(e["backbone"]),
        )
    )
    return table


def is_baseline(entry):
    """True for the rows of the `prior_box` and `majority_class` baselines."""
    return entry["backbone"] in BASELINES


def best_backbones(table, metric):
    """{(mode, label_fraction): set of backbones with the highest mean}, for groups of >= 2 backbones.

    The baselines do not compete: they are the level to beat, not backbones.
    """
    best = {}
    for key in dict.fromkeys((e["mode"], e["label_fraction"]) for e in table):
        group = [
            e
            for e in table
            if (e["mode"], e["label_fraction"]) == key and metric in e and not is_baseline(e)
        ]
        if len(group) < 2:
            continue
        top = max(e[metric] for e in group)
        best[key] = {e["backbone"] for e in group if e[metric] == top}
    return best


def percent(fraction):
    """A label fraction as a percentage: `percent(0.1) == "10%"`, `percent(0.25) == "25%"`."""
    return f"{fraction * 100:g}%"


def metric_count(entry, metric):
    """How many seeds an `aggregate` entry's `metric` is averaged over (`n` for older tables)."""
    return int(entry.get(metric + "_n", entry["n"]))


def within_noise(first, second, *, metric):
    """Whether two `aggregate` entries differ on `metric` by no more than the seed-to-seed spread.

    The spread is the larger of the two sample standard deviations over seeds: a difference
    that is not larger than it is not told apart from seed noise.

    Args:
        first: dict, an entry of `aggregate`.
        second: dict, another entry of `aggregate`.
        metric: string, a key both entries hold, e.g. `"mean_iou"`.

    Returns:
        True or False; None when either side has a single seed (the noise is not measured).

    Example:

    >>> a = {"n": 3, "mean_iou": 0.60, "mean_iou_std": 0.10}
    >>> b = {"n": 3, "mean_iou": 0.50, "mean_iou_std": 0.05}
    >>> within_noise(a, b, metric="mean_iou")
    True
    """
    if min(metric_count(first, metric), metric_count(second, metric)) < 2:
        return None
    noise = max(first[metric + "_std"], second[metric + "_std"])
    return bool(abs(first[metric] - second[metric]) <= noise)


def _mean_std(entry, metric, *, signed=False):
    """`mean ± std`; a single seed shows the mean alone (its std is not measured, not 0)."""
    sign = "+" if signed else ""
    count = metric_count(entry, metric)
    if count > 1:
        return f"{entry[metric]:{sign}.3f} ± {entry[metric + '_std']:.3f}"
    # The n column gives the row's seeds; say so here only where this metric has fewer.
    return f"{entry[metric]:{sign}.3f}" + (f" (n = {count})" if count != entry["n"] else "")


def format_results_md(table, metrics=METRICS):
    """Markdown tables (one per mode) of mean ± std over seeds; the best mean per column in bold.

    The `n` column is the number of seeds of a row; a single seed shows the mean alone (no
    "± 0": its spread is not measured), and a metric held by fewer seeds than its row says
    so, e.g. "0.400 (n = 1)".

    A column is one metric within one mode and label fraction; bold needs >= 2 backbones there.
    Each mode × fraction block ends with the `prior_box` and `majority_class` rows when the
    cells hold baselines, and then each backbone row also shows its margins over them
    (MARGIN_COLUMNS, mean ± std over seeds of the per-seed margin). A dash marks a metric that
    a row does not have (a class metric of the prior box, a box metric of the majority class).
    """
    if not table:
        return "No cell has finished yet.\n"
    metrics = [m for m in metrics if any(m in e for e in table)]
    margins = [(key, title) for key, title in MARGIN_COLUMNS if any(key in e for e in table)]
    columns = metrics + [key for key, _ in margins]
    best = {column: best_backbones(table, column) for column in columns}
    lines = []
    for mode in dict.fromkeys(e["mode"] for e in table):
        titles = [METRIC_TITLES.get(m, m) for m in metrics] + [title for _, title in margins]
        lines += [
            f"### {mode} ({MODE_TITLES.get(mode, mode)})",
            "",
            "| labels | backbone | n | train images | " + " | ".join(titles) + " |",
            "|---|---|---:|---:|" + "---:|" * len(columns),
        ]
        for e in (e for e in table if e["mode"] == mode):
            cells = []
            for column in columns:
                if column not in e:
                    cells.append("—")
                    continue
                text = _mean_std(e, column, signed=column.endswith(MARGIN_SUFFIX))
                if e["backbone"] in best[column].get((mode, e["label_fraction"]), ()):
                    text = f"**{text}**"
                cells.append(text)
            lines.append(
                f"| {percent(e['label_fraction'])} | {e['backbone']} | {e['n']} | "
                f"{e['num_train_images']:g} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    lines.append(
        "Mean ± sample standard deviation (ddof=1) over the n seeds; a value without ± is a single "
        "seed (n = 1), whose spread is not measured. Bold: the best mean of a column among the "
        "backbones within its mode and label fraction."
    )
    if any(is_baseline(e) for e in table):
        lines += [
            "",
            "prior_box: one constant box; majority_class: always the most frequent training classes. "
            "Both are fitted on the cell's labelled training subset and never look at an image. "
            "Δ columns: the backbone's metric minus the baseline's, per seed.",
        ]
    return "\n".join(lines) + "\n"


def _baseline_of(metric):
    """The baseline a metric is compared with, or None (cls+loc has none)."""
    if metric in BOX_METRICS:
        return PRIOR_BOX
    if metric in CLASS_METRICS:
        return MAJORITY_CLASS
    return None


def baseline_noise(entry, metric):
    """The seed-to-seed spread that a margin over the baseline must exceed to count as a win.

    The larger of the margin's sample std over seeds and the backbone's own std on `metric`
    (the baseline is fitted per seed, so the backbone's spread is the side that carries
    noise). None when the margin is missing or averaged over a single seed.
    """
    key = metric + MARGIN_SUFFIX
    if key not in entry or metric_count(entry, key) < 2:
        return None
    return max(entry[key + "_std"], entry.get(metric + "_std", 0.0))


def baseline_verdict(entry, metric):
    """How a backbone's mean margin on `metric` stands against the metric's baseline.

    Args:
        entry: dict, a backbone's entry of `aggregate`.
        metric: string, a metric with a baseline, e.g. `"mean_iou"` or `"top1"`.

    Returns:
        None when the entry has no margin for `metric` (its cells predate the baselines);
        otherwise `"beats"` (the margin is above 0 by more than `baseline_noise`),
        `"within noise"` (the margin is not larger than a non-zero `baseline_noise` either way)
        or `"does not beat"` (the margin is below that, or 0 with no spread). With one seed
        the noise is not measured, so any positive margin beats (and the sentences say that
        the noise is not measured).

    Example:

    >>> entry = {"n": 2, "mean_iou": 0.413, "mean_iou_std": 0.004,
    ...          "mean_iou_margin": 0.003, "mean_iou_margin_std": 0.010}
    >>> baseline_verdict(entry, "mean_iou")
    'within noise'
    """
    key = metric + MARGIN_SUFFIX
    if key not in entry:
        return None
    margin, noise = entry[key], baseline_noise(entry, metric) or 0.0
    if margin > 0 and margin > noise:
        return "beats"
    if noise > 0 and abs(margin) <= noise:
        return "within noise"
    return "does not beat"


def beats_baseline(entry, metric):
    """Whether a backbone's mean margin on `metric` is above 0 by more than the seed noise.

    The noise is `baseline_noise`: the larger of the margin's std and the backbone's own std
    over seeds. Returns None when the entry has no margin for `metric` (its cells predate the
    baselines). With one seed the noise is not measured, so any positive margin counts (and
    the sentences say that the noise is not measured). See `baseline_verdict`.
    """
    verdict = baseline_verdict(entry, metric)
    return None if verdict is None else verdict == "beats"


def _margin_text(entry, metric):
    key = metric + MARGIN_SUFFIX
    if metric_count(entry, key) > 1:
        return f"margin {entry[key]:+.3f} ± {entry[key + '_std']:.3f}"
    return f"margin {entry[key]:+.3f}, one seed so the noise is not measured"


def _baseline_clause(entry, metric, verdict):
    """`beats the constant prior box`, `is within noise of the majority class`, ..."""
    target = BASELINE_TITLES[_baseline_of(metric)]
    if verdict == "within noise":
        return f"is within noise of {target}"
    return f"{verdict} {target}"


def _names(entries):
    names = [e["backbone"] for e in entries]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe_results(table, metric="mean_iou"):
    """One sentence per mode × fraction: the best backbone, its lead over the next, and if it beats noise.

    The lead counts as real when it exceeds the larger of the two sample standard deviations
    over seeds (`within_noise`); when it does not, the sentence names the backbones within
    noise of the best and says that none of them wins. With a single seed the noise is not
    measured and the sentence says so. When the cells hold baselines and no backbone beats the
    metric's baseline (`beats_baseline`), the sentence says so instead of naming a best
    backbone: the ranking of backbones that all stay at the level of a guess that ignores the
    image shows nothing about them.
    """
    title = METRIC_TITLES.get(metric, metric)
    sentences = []
    for mode, fraction in dict.fromkeys(
        (e["mode"], e["label_fraction"]) for e in table if not is_baseline(e)
    ):
        group = sorted(
            (
                e
                for e in table
                if (e["mode"], e["label_fraction"]) == (mode, fraction)
                and not is_baseline(e)
                and metric in e
            ),
            key=lambda e: -e[metric],
        )
        if group:
            where = f"{mode}, {percent(fraction)} of the labels"
            sentences.append(_describe_group(group, metric, where=where, title=title))
    return sentences


def _describe_group(group, metric, *, where, title):
    """`describe_results`' sentence on one mode × fraction: `group` holds its backbones, best first."""
    baseline = _baseline_of(metric)
    best = group[0]
    verdicts = [beats_baseline(e, metric) for e in group]
    if baseline is not None and any(v is not None for v in verdicts) and not any(verdicts):
        ranked = "the only backbone" if len(group) == 1 else "the best"
        return (
            f"{where}: no backbone beats {BASELINE_TITLES[baseline]} on {title} ({ranked}, "
            f"{best['backbone']}, has {best[metric]:.3f}, {_margin_text(best, metric)}), "
            f"so no backbone wins here."
        )
    if len(group) == 1:
        return f"{where}: only {best['backbone']} finished ({title} {best[metric]:.3f})."
    second = group[1]
    gap = best[metric] - second[metric]
    noise = max(best[metric + "_std"], second[metric + "_std"])
    own = ""
    if verdicts[0] is False:
        own = (
            f"; {best['backbone']} itself {_baseline_clause(best, metric, baseline_verdict(best, metric))} "
            f"({_margin_text(best, metric)})"
        )
    if gap == 0:
        return (
            f"{where}: {best['backbone']} and {second['backbone']} tie on {title} "
            f"({best[metric]:.3f})."
        )
    close = within_noise(best, second, metric=metric)
    if close:
        tied = [best] + [e for e in group[1:] if within_noise(best, e, metric=metric)]
        noise = max(e[metric + "_std"] for e in tied)
        values = " vs ".join(f"{e[metric]:.3f}" for e in tied)
        lead = " and ".join(f"+{best[metric] - e[metric]:.3f}" for e in tied[1:])
        neither = "neither wins" if len(tied) == 2 else "none of them wins"
        return (
            f"{where}: {_names(tied)} are within noise on {title}, {values} ({lead}, not larger "
            f"than the std over seeds {noise:.3f}), so {neither} here{own}."
        )
    if close is None:
        verdict = "one seed only, so the noise is not measured"
    else:
        verdict = f"the gap exceeds the std over seeds ({noise:.3f})"
    return (
        f"{where}: {best['backbone']} has the best {title}, {best[metric]:.3f} vs "
        f"{second[metric]:.3f} for {second['backbone']} (+{gap:.3f}); {verdict}{own}."
    )


def describe_baselines(table, box_metric="mean_iou", class_metric="top1"):
    """One sentence per backbone × mode × fraction: does it beat the prior box, and the majority class?

    A backbone beats a baseline when its mean margin is above 0 by more than the seed noise,
    the larger of the margin's std and the backbone's own std over seeds; a margin not larger
    than that noise is "within noise" of the baseline, not a win (`baseline_verdict`).
    Backbones whose cells hold no baselines get no sentence.

    Example: "freeze, 10% of the labels, ssl: mean IoU 0.418 is within noise of the constant
    prior box (margin +0.003 ± 0.010; prior 0.415); top-1 0.700 beats the majority class
    (margin +0.400 ± 0.020; majority 0.300)."
    """
    baselines = {
        (e["backbone"], e["mode"], e["label_fraction"]): e for e in table if is_baseline(e)
    }
    sentences = []
    for e in table:
        if is_baseline(e):
            continue
        clauses = []
        for metric in (box_metric, class_metric):
            verdict = baseline_verdict(e, metric)
            if verdict is None or metric not in e:
                continue
            name = _baseline_of(metric)
            reference = baselines.get((name, e["mode"], e["label_fraction"]), {})
            level = (
                f"; {'prior' if name == PRIOR_BOX else 'majority'} {reference[metric]:.3f}"
                if metric in reference
                else ""
            )
            noise = baseline_noise(e, metric)
            # Say which spread decided it where it is the backbone's own rather than the margin's.
            spread = (
                f", not larger than the std over seeds {noise:.3f}"
                if verdict == "within noise" and noise > e[metric + MARGIN_SUFFIX + "_std"]
                else ""
            )
            clauses.append(
                f"{METRIC_TITLES.get(metric, metric)} {e[metric]:.3f} "
                f"{_baseline_clause(e, metric, verdict)} ({_margin_text(e, metric)}{spread}{level})"
            )
        if clauses:
            sentences.append(
                f"{e['mode']}, {percent(e['label_fraction'])} of the labels, {e['backbone']}: "
                + "; ".join(clauses)
                + "."
            )
    return sentences


def plot_filename(metric):
    """`plot_mean_iou.png`, `plot_loc_acc_0.5.png`, ..."""
    return "plot_" + re.sub(r"[^A-Za-z0-9._-]", "_", metric) + ".png"


MIN_Y_SPAN = 0.1


def metric_y_limits(values, *, min_span=MIN_Y_SPAN, pad=0.05):
    """The y range of a metric plot: all `values` padded, at least `min_span` tall.

    A nearly flat set of means would otherwise fill the axes, so that seed noise of 0.01
    looks like a trend. The range is widened around the data's middle to `min_span`, and
    shifted (not clipped) to stay inside [0, 1] when the data are.

    Args:
        values: numbers that must be visible: means, mean ± std, baseline levels.
        min_span: float, the smallest height of the range. Defaults to 0.1.
        pad: float, the margin added above and below, as a fraction of the data's span
            (at least of `min_span`). Defaults to 0.05.

    Returns:
        `(low, high)`, or None when `values` holds no finite number.

    Example:

    >>> metric_y_limits([0.41, 0.42])
    (0.365, 0.465)
    """
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if not len(values):
        return None
    data_low, data_high = float(values.min()), float(values.max())
    margin = pad * max(data_high - data_low, min_span)
    low, high = data_low - margin, data_high + margin
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    # Metrics in [0, 1] keep their range inside it: shift the window, clip only if taller than 1.
    if data_low >= 0 and low < 0:
        low, high = 0.0, high - low
    if data_high <= 1 and high > 1:
        low, high = low - (high - 1), 1.0
        if data_low >= 0:
            low = max(low, 0.0)
    return round(low, 12), round(high, 12)


def _plot_backbone(ax, points, metric, *, color, label):
    """One backbone's line of `metric_figure`, with std bars where seeds measured a spread.

    Returns:
        The list of y values drawn (means and bar ends), which the y limits must hold.
    """
    means = np.asarray([e[metric] for e in points])
    spread = np.asarray(
        [e[metric + "_std"] if metric_count(e, metric) > 1 else np.nan for e in points]
    )
    measured = ~np.isnan(spread)
    ax.errorbar(
        [e["label_fraction"] for e in points],
        means,
        yerr=np.where(measured, spread, 0.0) if measured.any() else None,
        errorevery=measured if measured.any() else 1,
        marker="o",
        capsize=3,
        color=color,
        label=label,
    )
    return list(means) + list((means + spread)[measured]) + list((means - spread)[measured])


def _by_fraction(entries):
    """`entries` sorted by label fraction: the points of one line of `metric_figure`."""
    return sorted(entries, key=lambda e: e["label_fraction"])


def _plot_baseline(ax, reference, metric, *, label):
    """The dashed gray baseline line of `metric_figure`; returns the y values drawn."""
    # A flat marker keeps the level visible where a single fraction leaves no line to draw.
    ax.plot(
        [e["label_fraction"] for e in reference],
        [e[metric] for e in reference],
        linestyle="--",
        color="gray",
        marker="_",
        markersize=14,
        label=label,
    )
    return [e[metric] for e in reference]


def _format_fraction_axis(ax, fractions, *, title):
    """A `metric_figure` subplot's log-scale label-fraction x axis, a tick at each fraction, title and grid."""
    ax.set_xscale("log")
    if fractions:
        # Room for the end markers: a quarter of a decade, or more with one fraction.
        ax.set_xlim(min(fractions) / 10**0.25, max(fractions) * 10**0.25)
    ax.set_xticks(fractions)
    ax.set_xticklabels([percent(f) for f in fractions])
    ax.minorticks_off()
    ax.set_title(title)
    ax.set_xlabel("label fraction (log scale)")
    ax.grid(alpha=0.3)


def metric_figure(table, metric, *, dpi=100, subplot_size=(5.0, 4.0)):
    """The figure of `plot_metric`, not yet saved: a matplotlib `Figure` with one axes per mode.

    The subplots (one per mode, side by side: frozen, fine-tuned, ...) share the y axis. The
    x axis is the label fraction on a log scale, with a tick at each measured fraction. Each
    backbone is a line (the same colour in every subplot) with error bars of the sample std
    over seeds; a point of a single seed has no bar, since its spread is not measured. The
    metric's baseline, where the table holds it (the prior box for box metrics, the majority
    class for top-1 and top-3), is a dashed gray line across the label fractions labelled
    "prior box (no image)" or "majority class (no image)". The y range holds every mean,
    error bar and baseline level and is at least 0.1 tall (`metric_y_limits`), so that seed
    noise does not look like a trend.

    Args:
        table: rows from `aggregate`.
        metric: string, a metric key, e.g. `"mean_iou"`.
        dpi: int. Defaults to 100.
        subplot_size: (width, height) in inches of each subplot. Defaults to (5, 4).

    Returns:
        A matplotlib `Figure` with an Agg canvas; `figure.axes` holds one axes per mode.

    Example:

    >>> figure = metric_figure(aggregate(rows), "mean_iou")
    >>> figure.axes[0].get_ylim()
    """
    # Figure without pyplot: no global backend switch, and Agg renders PNG headless.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    modes = list(dict.fromkeys(e["mode"] for e in table))
    backbones = list(dict.fromkeys(e["backbone"] for e in table if not is_baseline(e)))
    colors = {backbone: f"C{index % 10}" for index, backbone in enumerate(backbones)}
    fractions = sorted({e["label_fraction"] for e in table})
    baseline = _baseline_of(metric)
    figure = Figure(figsize=(subplot_size[0] * max(len(modes), 1), subplot_size[1]), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(len(modes), 1), sharey=True, squeeze=False)[0]
    title = METRIC_TITLES.get(metric, metric)
    shown = []  # every y value that must be inside the limits
    for ax, mode in zip(axes, modes):
        mode_rows = [e for e in table if e["mode"] == mode and metric in e]
        for backbone in backbones:
            points = _by_fraction(e for e in mode_rows if e["backbone"] == backbone)
            if points:
                shown += _plot_backbone(ax, points, metric, color=colors[backbone], label=backbone)
        reference = _by_fraction(e for e in mode_rows if e["backbone"] == baseline)
        if reference:
            shown += _plot_baseline(ax, reference, metric, label=BASELINE_PLOT_LABELS[baseline])
        _format_fraction_axis(ax, fractions, title=MODE_TITLES.get(mode, mode))
    limits = metric_y_limits(shown)
    if limits is not None:
        axes[0].set_ylim(*limits)  # shared: every subplot gets them
    axes[0].set_ylabel(title)
    if modes:
        # Translucent and small: with several fractions "best" may still have to cover a point.
        axes[0].legend(fontsize="small", framealpha=0.7)
    # Two lines, so that a single subplot's width still holds it.
    figure.suptitle(
        f"{title} vs label fraction\nmean ± sample std over seeds; no bar: one seed", fontsize=10
    )
    figure.tight_layout()
    return figure


def plot_metric(table, metric, path, *, dpi=100, subplot_size=(5.0, 4.0)):
    """Plots `metric` vs label fraction: one subplot per mode, one line per backbone, std error bars.

    The baseline of the metric, when the table holds its rows, is a dashed gray line (see
    `metric_figure`).

    Args:
        table: rows from `aggregate`.
        metric: string, a metric key, e.g. `"mean_iou"`.
        path: the PNG file to write.
        dpi: int. Defaults to 100.
        subplot_size: (width, height) in inches of each subplot. Defaults to (5, 4), so the
            image is `(500 * num_modes, 400)` pixels.

    Returns:
        `path`.
    """
    figure = metric_figure(table, metric, dpi=dpi, subplot_size=subplot_size)
    file_format = os.path.splitext(path)[1].lstrip(".") or "png"
    return write_file_atomic(path, lambda tmp: figure.savefig(tmp, dpi=dpi, format=file_format))


def _write_plots(table, out):
    """`{metric: path}` of the PLOTTED_METRICS' plots written into `out` (none for an empty table)."""
    plots = {}
    if table:
        for metric in PLOTTED_METRICS:
            plots[metric] = plot_metric(table, metric, os.path.join(out, plot_filename(metric)))
    return plots


def write_hparams(config, rows, path):
    """TensorBoard's HParams view of the grid (`ssl_keras.runs.hparams`), written at `path`.

    Each row of results.csv, a finished cell or a baseline row, is one session named
    `{backbone}/{mode}/frac{fraction}/seed{seed}`. Its hyperparameters are its backbone, mode,
    label fraction and seed, over the grid's values; its metrics are its results.csv metrics
    and margins (those that some row holds).

    Args:
        config: the `CompareConfig`.
        rows: dicts with the CSV_COLUMNS (`collect_rows` and `baseline_rows`).
        path: the logs folder, replaced as a whole.

    Returns:
        `path`.
    """
    names = METRICS + ("balanced_top1",) + MARGINS
    metrics = [m for m in names if any(_present(row.get(m)) for row in rows)]
    titles = {m: METRIC_TITLES.get(m, m) for m in metrics}
    for key, title in MARGIN_COLUMNS:
        titles[key] = title
    for metric in MARGIN_METRICS:
        short = "prior" if _baseline_of(metric) == PRIOR_BOX else "majority"
        titles.setdefault(metric + MARGIN_SUFFIX, f"Δ {METRIC_TITLES[metric]} vs {short}")
    backbones = [label for label, _ in config.labelled_backbones()]
    backbones += [name for name in BASELINES if any(row["backbone"] == name for row in rows)]
    sessions = [
        (
            f"{row['backbone']}/{row['mode']}/frac{row['label_fraction']}/seed{row['seed']}",
            {
                "backbone": row["backbone"],
                "mode": row["mode"],
                "label_fraction": float(row["label_fraction"]),
                "seed": int(row["seed"]),
            },
            {m: row.get(m) if _present(row.get(m)) else None for m in metrics},
        )
        for row in rows
    ]
    hparams = {
        "backbone": backbones,
        "mode": list(config.modes),
        "label_fraction": [float(f) for f in config.label_fractions],
        "seed": list(range(config.seeds)),
    }
    return write_hparams_logs(
        path, sessions, hparams=hparams, metrics=metrics, metric_titles=titles
    )


def _gradcam_picture(gradcam, rows, out, *, log):
    """`(path or None, note or None)` of the report's Grad-CAM picture (see `run_compare`).

    The hook makes it from the finished cells; without a hook, or when it makes none, an
    existing `OUT/gradcam_grid.png` is linked. A failing hook gives a note, not an error.
    """
    gradcam_path, gradcam_note = None, None
    if gradcam is not None and rows:
        cell_dirs = {
            (r["backbone"], r["mode"], r["label_fraction"], r["seed"]): os.path.join(
                out, r["run_dir"]
            )
            for r in rows
        }
        try:
            gradcam_path = gradcam(out, cell_dirs)
        except Exception as error:  # an optional picture must not cost the finished grid its report
            gradcam_note = f"the Grad-CAM hook failed: {type(error).__name__}: {error}"
            log(f"[compare] {gradcam_note}")
    if gradcam_path is None and os.path.isfile(os.path.join(out, GRADCAM_FILE)):
        gradcam_path = os.path.join(out, GRADCAM_FILE)
    return gradcam_path, gradcam_note


def summarize_compare(config, *, skipped=None, gradcam=None, log=print):
    """Writes results.csv, results.md, the plots and report.md from the finished cells on disk.

    Needs no training, so it also refreshes the report of a comparison that is still running.
    `skipped` defaults to the stored skipped.json; see `run_compare` for `gradcam`.

    Returns:
        A dict: `out`, `skipped`, `rows` (one per finished cell), `baseline_rows` (see
        `baseline_rows`), `table` (`aggregate` of both), `findings` (`describe_results`, then
        `describe_baselines`), `outputs`.
    """
    out = os.path.abspath(os.fspath(config.out))
    skipped_path = os.path.join(out, "skipped.json")
    if skipped is None:
        skipped = read_json(skipped_path) if os.path.isfile(skipped_path) else {}
    rows = collect_rows(config)
    baselines = baseline_rows(rows, log=log)
    table = aggregate(rows + baselines)
    outputs = {
        "compare": os.path.join(out, "compare.json"),
        "skipped": skipped_path,
        "results_csv": os.path.join(out, "results.csv"),
        "results_md": os.path.join(out, "results.md"),
    }
    write_results_csv(rows + baselines, outputs["results_csv"])
    results_md = format_results_md(table)
    _write_text(outputs["results_md"], "# Results\n\n" + results_md)
    plots = _write_plots(table, out)
    outputs.update({f"plot_{metric}": path for metric, path in plots.items()})
    if rows:
        outputs["hparams"] = write_hparams(
            config, rows + baselines, os.path.join(out, HPARAMS_FOLDER)
        )

    gradcam_path, gradcam_note = _gradcam_picture(gradcam, rows, out, log=log)
    if gradcam_path:
        outputs["gradcam"] = os.fspath(gradcam_path)

    findings = describe_results(table) if table else []
    baseline_findings = describe_baselines(table)
    outputs["report"] = os.path.join(out, "report.md")
    _write_text(
        outputs["report"],
        format_report(
            config,
            rows=rows,
            table=table,
            results_md=results_md,
            findings=findings,
            skipped=skipped,
            plots=plots,
            gradcam=gradcam_path,
            gradcam_note=gradcam_note,
            out=out,
            baseline_findings=baseline_findings,
        ),
    )
    for sentence in findings + baseline_findings:
        log(f"[compare] {sentence}")
    log(
        f"[compare] {len(rows)} of {len(grid_cells(config))} cells finished; report: {outputs['report']}"
    )
    return {
        "out": out,
        "skipped": dict(skipped),
        "rows": rows,
        "baseline_rows": baselines,
        "table": table,
        "findings": findings + baseline_findings,
        "outputs": outputs,
    }


def format_report(
    config,
    *,
    rows,
    table,
    results_md,
    findings,
    skipped,
    plots,
    gradcam,
    gradcam_note,
    out,
    baseline_findings=(),
):
    """report.md: the exact grid, what it shows, the table, plots, skipped backbones and Grad-CAM.

    `rows` are the finished cells (`collect_rows`); `findings` are `describe_results`'
    sentences and `baseline_findings` `describe_baselines`' (one per backbone × mode ×
    fraction, under "Against the baselines"). What the baselines are is said near the top when
    `table` holds them, and that the cells have none otherwise.
    """
    cells = grid_cells(config)
    finished = {r["run_dir"] for r in rows}
    lines = [
        f"# Backbone comparison on {config.data}",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `ssl_keras.compare.compare`; "
        f"{len(finished)} of {len(cells)} cells finished.",
        "",
    ]
    if any(is_baseline(e) for e in table):
        lines += [BASELINES_NOTE, ""]
    elif rows:
        lines += [
            "The finished cells predate the trivial baselines (their metrics.json has no `baselines`), so "
            "nothing here says whether a backbone beats a constant box or the majority class.",
            "",
        ]
    lines += _report_grid(config, skipped)
    lines += _report_findings(findings, baseline_findings)
    lines += [
        "",
        "## Results",
        "",
        "Test-split metrics; per cell in [results.csv](results.csv), this table also in "
        "[results.md](results.md).",
        "",
        results_md,
    ]
    if rows:
        lines += [
            f"To filter and sort the cells in TensorBoard's HParams view: `tensorboard --logdir "
            f"{os.path.join(out, HPARAMS_FOLDER)}`.",
            "",
        ]
    lines += _report_pictures(
        config, plots=plots, skipped=skipped, gradcam=gradcam, gradcam_note=gradcam_note, out=out
    )
    # Cells of skipped backbones are accounted for above, one line per backbone.
    unfinished = [
        cell for cell in cells if cell.run_dir not in finished and cell.label not in skipped
    ]
    if unfinished:
        lines += ["## Unfinished cells", ""]
        lines += [f"- `{cell.run_dir}`" for cell in unfinished]
        lines += ["", "Run the same comparison again on this `out` to continue.", ""]
    return "\n".join(lines)


def _report_grid(config, skipped):
    """report.md's "Grid" section: the backbones, the axes, the per-cell options and all options."""
    lines = ["## Grid", "", "| backbone | spec |", "|---|---|"]
    lines += [
        f"| {label} | `{spec}`{' (skipped)' if label in skipped else ''} |"
        for label, spec in config.labelled_backbones()
    ]
    return lines + [
        "",
        f"- modes: {', '.join(config.modes)}",
        f"- label fractions: {', '.join(percent(f) for f in config.label_fractions)}",
        f"- seeds: {', '.join(str(s) for s in range(config.seeds))}",
        f"- per cell: `{config.backbone_name}`, {config.epochs} epoch(s), image size {config.image_size}, "
        f"batch {config.batch_size}, learning rate {config.learning_rate:g}",
        "- cells: `cells/{label}/{mode}/frac{fraction}/seed{seed}/`, each a detect run directory",
        "",
        "All options (as in `compare.json`):",
        "",
        "```",
        *(f"{key} = {value!r}" for key, value in to_dict(config).items()),
        "```",
        "",
    ]


def _report_findings(findings, baseline_findings):
    """report.md's "What it shows" section, with "Against the baselines" when there are any."""
    lines = ["## What it shows", ""]
    lines += [f"- {sentence}" for sentence in findings] or ["No cell has finished yet."]
    if baseline_findings:
        lines += [
            "",
            "### Against the baselines",
            "",
            "A backbone beats a baseline when its mean margin over seeds is above 0 by more than the seed "
            "noise: the larger of the margin's and the backbone's own sample std over seeds. A margin not "
            "larger than that is within noise, not a win.",
            "",
        ]
        lines += [f"- {sentence}" for sentence in baseline_findings]
    return lines


def _report_pictures(config, *, plots, skipped, gradcam, gradcam_note, out):
    """report.md's "Plots", "Skipped backbones" and (when there is one) "Grad-CAM" sections."""
    lines = ["## Plots", ""]
    for metric, path in plots.items():
        title = METRIC_TITLES.get(metric, metric)
        lines += [f"![{title} vs label fraction]({os.path.relpath(path, out)})", ""]
    if not plots:
        lines += ["No plots: no cell has finished yet.", ""]
    lines += ["## Skipped backbones", ""]
    lines += [
        f"- {label} (`{dict(config.labelled_backbones()).get(label, '?')}`, all its cells): {reason}"
        for label, reason in skipped.items()
    ] or ["None."]
    lines += [""]
    if gradcam or gradcam_note:
        lines += ["## Grad-CAM", ""]
        if gradcam:
            lines += [f"![Grad-CAM grid]({os.path.relpath(os.path.abspath(gradcam), out)})", ""]
        if gradcam_note:
            lines += [gradcam_note, ""]
    return lines


def _write_text(path, text):
    write_text_atomic(path, text)
