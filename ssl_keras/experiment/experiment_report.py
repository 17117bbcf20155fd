"""The experiment's report: how many labels the reference saves, the tables, and where each backbone looks.

Everything here is read from the finished stages on disk, so rerunning the experiment command
after it has finished rebuilds the report without training anything.
"""

import os

import numpy as np

from ssl_keras.compare.compare import MODE_TITLES, baseline_verdict, is_baseline
from ssl_keras.experiment.labels_saved import format_labels_saved_md, headline, labels_saved
from ssl_keras.runs.run_directory import read_json, write_json_atomic, write_text_atomic

GRADCAM_FOLDER = "gradcam"
ANALYSIS_FILE = "analysis.json"


def with_prior_caveat(rows, table):
    """Marks the labels-saved rows whose reference does not beat the constant prior box.

    Where the reference's own curve sits at the prior box, matching it says nothing about
    labels: every backbone "matches" a model that has learned no more than a constant box. Each
    row gets `reference_vs_prior` (`baseline_verdict`) and, unless it is "beats", a caveat at
    the end of its `text`.
    """
    for row in rows:
        entry = next(
            (
                e
                for e in table
                if not is_baseline(e)
                and e["backbone"] == row["reference"]
                and e["mode"] == row["mode"]
                and e["label_fraction"] == row["at"]
            ),
            None,
        )
        verdict = baseline_verdict(entry, row["metric"]) if entry else None
        row["reference_vs_prior"] = verdict
        if verdict is not None and verdict != "beats":
            row["text"] += (
                f" [caveat: {row['reference']} {'is within noise of' if verdict == 'within noise' else 'does not beat'}"
                f" the constant prior box here, so this compares noise around the prior, not labels saved]"
            )
    return rows


def gradcam_models(cells, mode):
    """{backbone: run dir} of one mode's cells chosen for Grad-CAM: seed 0 (the lowest) at the
    largest label fraction, in the grid's backbone order; backbones without such a cell are left out.

    Args:
        cells: list of dicts with `backbone`, `mode`, `label_fraction`, `seed`, `run_dir` and
            `status` (run_compare's `cells`).
        mode: string, a detect mode.
    """
    finished = [
        c
        for c in cells
        if c["mode"] == mode
        and c["status"] != "skipped"
        and os.path.isfile(os.path.join(c["run_dir"], "metrics.json"))
    ]
    if not finished:
        return {}
    largest = max(c["label_fraction"] for c in finished)
    chosen = {}
    for cell in sorted(
        (c for c in finished if c["label_fraction"] == largest), key=lambda c: c["seed"]
    ):
        chosen.setdefault(cell["backbone"], cell["run_dir"])
    order = [c["backbone"] for c in cells]
    return {label: chosen[label] for label in sorted(chosen, key=order.index)}


def pretrain_rows(experiment):
    """One dict per pretraining stage from its result.json (None values where it has not finished)."""
    rows = []
    for stage, config in experiment.pretrain.items():
        path = os.path.join(os.path.abspath(config.out), "result.json")
        result = read_json(path) if os.path.isfile(path) else {}
        history = result.get("history") or {}
        probe = history.get("probe_top1") or []
        rows.append(
            {
                "stage": stage,
                "method": config.method,
                "data": config.data,
                "epochs": config.epochs,
                "image_size": config.image_size,
                "batch_size": config.batch_size,
                "finished": bool(result),
                "loss": result.get("loss"),
                "contrastive_accuracy": result.get("contrastive_accuracy"),
                "chance_contrastive_accuracy": result.get("chance_contrastive_accuracy"),
                "val_accuracy": result.get("val_accuracy"),
                "knn_top1_first": probe[0] if probe else None,
                "knn_top1_last": probe[-1] if probe else None,
                "wall_seconds": result.get("wall_seconds"),
            }
        )
    return rows


def _fmt(value, digits=3):
    return "—" if value is None else f"{value:.{digits}f}"


def format_pretrain_md(rows):
    lines = [
        "| stage | method | epochs | px | final loss | contrastive top-1 (chance) | supervised val top-1 "
        "| kNN top-1 monitor, first → last epoch | wall |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        contrastive = (
            f"{_fmt(r['contrastive_accuracy'])} ({_fmt(r['chance_contrastive_accuracy'], 4)})"
            if r["contrastive_accuracy"] is not None
            else "—"
        )
        knn = (
            f"{_fmt(r['knn_top1_first'])} → {_fmt(r['knn_top1_last'])}"
            if r["knn_top1_last"] is not None
            else "—"
        )
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] else "—"
        lines.append(
            f"| {r['stage']} | {r['method']} | {r['epochs']} | {r['image_size']} | {_fmt(r['loss'])} | "
            f"{contrastive} | {_fmt(r['val_accuracy'])} | {knn} | {wall} |"
        )
    return "\n".join(lines)


def format_gradcam_md(results):
    """The in-box mass table: one row per (mode, backbone), one column per target, and the chance level."""
    targets = []
    for result in results.values():
        for entry in result["mass"].values():
            targets += [t for t in entry if t not in targets]
    lines = [
        "| mode | backbone | "
        + " | ".join(f"in-box mass, {t} target (excess over a flat map ± s.e.)" for t in targets)
        + " | box's share of the image (flat map) | images |",
        "|---|---|" + "---:|" * len(targets) + "---:|---:|",
    ]
    for mode, result in results.items():
        share = result["box_share"]
        for label, entry in result["mass"].items():
            cells = []
            for target in targets:
                value = entry.get(target) or {}
                excess = paired_excess(result, label, target)
                cells.append(
                    "—"
                    if value.get("mean") is None
                    else f"{value['mean']:.3f}"
                    + (
                        f" ({excess[0]:+.3f} ± {excess[1]:.3f})"
                        if excess and excess[1] is not None
                        else ""
                    )
                    + (
                        f", {value['skipped']} all-zero maps left out"
                        if value.get("skipped")
                        else ""
                    )
                )
            n = max((entry.get(t) or {}).get("n") or 0 for t in targets) if targets else 0
            lines.append(
                f"| {MODE_TITLES.get(mode, mode)} | {label} | "
                + " | ".join(cells)
                + f" | {_fmt(share.get('mean'))} | {n} |"
            )
    return "\n".join(lines)


def paired_excess(result, label, target):
    """In-box mass minus the box's area share, paired per test image: `(mean, standard error, n)`.

    The area share is what a flat heatmap gets on that image, so a mean excess of more than two
    standard errors above 0 says the backbone looks at the object more than chance does.
    Returns None where the per-image masses are not available.
    """
    per_image = result.get("per_image")
    if per_image is None:
        path = result.get("json")
        if not path or not os.path.isfile(path):
            return None
        # Read once: the tables, the findings and the demo's check all ask for it.
        per_image = result["per_image"] = read_json(path).get("per_image") or {}
    masses = ((per_image.get("mass") or {}).get(label) or {}).get(target)
    shares = per_image.get("box_share")
    if not masses or not shares:
        return None
    excess = np.asarray(
        [m - s for m, s in zip(masses, shares) if m is not None and s is not None], dtype=np.float64
    )
    if excess.size == 0:
        return None
    error = float(np.std(excess, ddof=1) / np.sqrt(excess.size)) if excess.size > 1 else None
    return float(np.mean(excess)), error, int(excess.size)


def _verdict(excess):
    if excess is None or excess[1] is None:
        return "its noise is not measured"
    mean, error, _ = excess
    if mean > 2 * error:
        return (
            "more of its heatmap inside the box than a flat map, by more than two standard errors"
        )
    if mean < -2 * error:
        return (
            "less of its heatmap inside the box than a flat map, by more than two standard errors"
        )
    return "not distinguishable from a flat map (within two standard errors)"


def gradcam_findings(results):
    """Sentences comparing each backbone's in-box mass with a flat map's (the box's area share)."""
    sentences = []
    for mode, result in results.items():
        share = result["box_share"].get("mean")
        for label, entry in result["mass"].items():
            for target, value in entry.items():
                if value.get("mean") is None or share is None:
                    continue
                excess = paired_excess(result, label, target)
                ratio = value["mean"] / share if share else float("nan")
                paired = (
                    f", paired excess {excess[0]:+.3f} ± {excess[1]:.3f} (standard error, {excess[2]} images)"
                    if excess and excess[1] is not None
                    else ""
                )
                sentences.append(
                    f"{MODE_TITLES.get(mode, mode)}, {label}, {target} target: in-box mass "
                    f"{value['mean']:.3f} against {share:.3f} for a flat map ({ratio:.2f}x{paired}): "
                    f"{_verdict(excess)}."
                )
    return sentences


def run_gradcam_analysis(experiment, cells, *, log=print):
    """Grad-CAM grids and in-box mass per mode; {mode: gradcam_across_backbones result}."""
    from ssl_keras.gradcam.gradcam import gradcam_across_backbones

    analysis = experiment.analysis
    results = {}
    if analysis.gradcam_images == 0:  # the file's way to turn Grad-CAM off
        return results
    for mode in experiment.compare.modes:
        models = gradcam_models(cells, mode)
        if not models:
            continue
        out_dir = os.path.join(os.path.abspath(experiment.out), GRADCAM_FOLDER, mode)
        log(
            f"[experiment] Grad-CAM, {MODE_TITLES.get(mode, mode)}: {', '.join(models)} -> {out_dir}"
        )
        results[mode] = gradcam_across_backbones(
            models,
            data=experiment.compare.data,
            out_dir=out_dir,
            num_images=analysis.gradcam_images,
            mass_images=analysis.gradcam_mass_images,
            log=log,
        )
    return results


def write_experiment_report(experiment, summary, *, log=print):
    """Writes OUT/report.md and OUT/analysis.json from the finished stages.

    Args:
        experiment: the `Experiment`.
        summary: `run_compare`'s summary of its comparison.
        log: callable taking one string. Defaults to `print`.

    Returns:
        A dict: `labels_saved` (rows of `labels_saved`), `gradcam` ({mode: result}),
        `headline` (lines to print), `report` and `analysis` (paths).
    """
    out = os.path.abspath(experiment.out)
    analysis = experiment.analysis
    table = summary["table"]
    try:
        saved = with_prior_caveat(
            labels_saved(
                table, reference=analysis.reference, at=analysis.at, metric=analysis.metric
            ),
            table,
        )
        lines = headline(saved)
    except (
        ValueError
    ) as error:  # e.g. the reference backbone was skipped, so there is nothing to measure
        saved, lines = [], [f"labels saved: not measured ({error})"]
    for line in lines:
        log(f"[experiment] {line}")
    gradcam = run_gradcam_analysis(experiment, summary.get("cells") or [], log=log)
    for sentence in gradcam_findings(gradcam):
        log(f"[experiment] {sentence}")

    pretrain = pretrain_rows(experiment)
    report_path = os.path.join(out, "report.md")
    write_text_atomic(
        report_path, format_experiment_report(experiment, summary, saved, lines, gradcam, pretrain)
    )
    analysis_path = os.path.join(out, ANALYSIS_FILE)
    write_json_atomic(
        analysis_path,
        {
            "labels_saved": saved,
            "headline": lines,
            "pretrain": pretrain,
            "gradcam": {
                mode: {k: v for k, v in result.items() if k not in ("grids", "per_image")}
                for mode, result in gradcam.items()
            },
        },
    )
    return {
        "labels_saved": saved,
        "gradcam": gradcam,
        "headline": lines,
        "report": report_path,
        "analysis": analysis_path,
    }


def _relative(path, start):
    return os.path.relpath(path, start).replace(os.sep, "/")


def format_experiment_report(experiment, summary, saved, lines, gradcam, pretrain):
    """report.md of the experiment: its record, labels saved, pretraining, transfer and Grad-CAM."""
    out = os.path.abspath(experiment.out)
    text = _report_header(experiment, out)
    text += _report_labels_saved(experiment.analysis, summary, saved, lines)
    text += ["## Pretraining", "", format_pretrain_md(pretrain), ""]
    text += _report_transfer(summary, out)
    text += _report_gradcam(gradcam, out)
    return "\n".join(text).rstrip() + "\n"


def _report_header(experiment, out):
    """The report's title, description, files, machine and wall time (from experiment.json)."""
    record = read_json(os.path.join(out, "experiment.json"))
    invocations = record.get("invocations", [])
    total = sum(item.get("wall_seconds", 0) for item in invocations)
    environment = record.get("environment", {})
    text = [f"# Experiment {experiment.name}", ""]
    if experiment.description:
        text += [experiment.description, ""]
    return text + [
        f"File: `{experiment.path}`. Output: `{out}`.",
        f"Machine: {environment.get('platform', '?')}, {os.cpu_count()} CPUs, devices "
        f"{', '.join(environment.get('devices') or ['cpu'])}; Keras {environment.get('keras', '?')} on "
        f"{environment.get('backend', '?')}; started {environment.get('started', '?')}.",
        f"Wall time: {total / 60:.1f} min over {len(invocations)} invocation(s) of `ssl-keras experiment`"
        + (
            " (an interrupted run was continued with the same command)"
            if len(invocations) > 1
            else ""
        )
        + ".",
        "",
    ]


def _report_labels_saved(analysis, summary, saved, lines):
    """The report's "How many labels does the reference save?" section, and the skipped backbones."""
    text = [
        "## How many labels does the reference save?",
        "",
        f"Reference backbone: **{analysis.reference}**; metric: {analysis.metric}, mean over seeds on the test "
        "split. For each other backbone, the label fraction at which its measured curve (interpolated "
        "linearly in log fraction) reaches the reference's value.",
        "",
    ]
    text += [f"- {line}" for line in lines] or ["- (no finished cells to compare)"]
    text += ["", format_labels_saved_md(saved) if saved else "", ""]
    skipped = summary.get("skipped") or {}
    if skipped:
        text += (
            ["Skipped backbones:", ""]
            + [f"- {label}: {reason}" for label, reason in skipped.items()]
            + [""]
        )
    return text


def _report_transfer(summary, out):
    """The report's transfer section: the comparison's results.md, plots and findings."""
    compare_out = summary["out"]
    trained = sorted({row["backbone"] for row in summary["rows"]})
    text = [
        "## Transfer: every cell, with the baselines that never look at the image",
        "",
        f"Trained backbones: {', '.join(trained) or 'none'}. Full tables and per-cell rows: "
        f"`{_relative(os.path.join(compare_out, 'results.md'), out)}`, "
        f"`{_relative(os.path.join(compare_out, 'results.csv'), out)}`.",
        "",
    ]
    results_md = os.path.join(compare_out, "results.md")
    if os.path.isfile(results_md):
        with open(results_md, encoding="utf-8") as f:
            body = f.read()
        text += [body.split("\n", 2)[2] if body.startswith("# ") else body, ""]
    for key, path in sorted(summary.get("outputs", {}).items()):
        if key.startswith("plot_") and path:
            text += [f"![{key[5:]}]({_relative(path, out)})", ""]
    findings = summary.get("findings") or []
    if findings:
        text += ["Findings:", ""] + [f"- {sentence}" for sentence in findings] + [""]
    return text


def _report_gradcam(gradcam, out):
    """The report's Grad-CAM section: the in-box mass table, its findings and the grids."""
    text = ["## Grad-CAM: where each backbone looks", ""]
    if not gradcam:
        return text + ["No finished cells to explain.", ""]
    text += [
        "Heatmap mass inside the ground-truth box, averaged over the test images (seed 0, largest label "
        "fraction). A flat heatmap gets the box's share of the image; a backbone that attends to the "
        "whole object gets more.",
        "",
        format_gradcam_md(gradcam),
        "",
    ]
    text += [f"- {sentence}" for sentence in gradcam_findings(gradcam)] + [""]
    for mode, result in gradcam.items():
        for target, path in result.get("grids", {}).items():
            text += [
                f"![Grad-CAM, {MODE_TITLES.get(mode, mode)}, {target} target]({_relative(path, out)})",
                "",
            ]
    return text
