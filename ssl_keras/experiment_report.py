"""The experiment's report: the comparison's tables, the labels saved and the Grad-CAM figures."""

import os
import shutil


def write_experiment_report(experiment, summary, *, log=print):
    """Writes OUT/report.md from the comparison's report (labels saved and Grad-CAM: next commit)."""
    out = os.path.abspath(experiment.out)
    compare_report = os.path.join(summary["out"], "report.md")
    report = os.path.join(out, "report.md")
    shutil.copyfile(compare_report, report)
    return {"labels_saved": [], "gradcam": None, "report": report, "headline": []}
