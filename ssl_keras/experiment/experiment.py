"""The paper's experiment as one versioned file: pretraining stages, the comparison grid, the analysis.

An experiment file (YAML or JSON) holds everything a run needs, so a result can be traced to the
file that produced it and rerun with one command (`ssl-keras experiment FILE`):

```yaml
name: paper_cpu
out: runs/paper_cpu            # relative paths are relative to the working directory
pretrain:                      # NAME: options of `ssl-keras pretrain` (out is OUT/pretrain/NAME)
  ssl: {method: simclr, data: ../shared/data/unlabeled, epochs: 8, image_size: 64, batch_size: 64}
  supervised: {method: supervised, data: ../shared/data/unlabeled, epochs: 8, image_size: 64}
compare:                       # options of `ssl-keras compare` (out is OUT/compare)
  data: voc:../shared/data/voc2007
  backbones: [ssl=pretrain:ssl, supervised=pretrain:supervised, scratch, imagenet]
  label_fractions: [0.1, 0.25, 1.0]
  modes: [freeze, freeze-then-finetune]
  seeds: 3
analysis:
  reference: ssl               # the backbone whose label efficiency is measured
  at: [0.1, 0.25]              # ... at these label fractions
  metric: mean_iou
  gradcam_images: 4            # the grid's rows
  gradcam_mass_images: null    # test images averaged for the in-box mass (null: all)
workers: 1                     # stages and cells trained at once, each in its own process
```

`pretrain:NAME` in `backbones` is the encoder that stage writes (`ssl:DIR` for SimCLR, the
run directory for supervised); `imagenet:FILE` uses a local Keras weights file, and plain
`imagenet` is skipped with its reason when the weights cannot be downloaded.

Running the same command again continues an interrupted experiment: finished stages and cells
are kept, an unfinished pretraining run resumes from its checkpoint, and the tables are
rebuilt from every finished cell.

`workers` (also `--workers`) is how the experiment runs, not what it measures: it is not part
of the options a continued run must match, and the results do not depend on it
(`ssl_keras.runs.parallel_runs`). Two workers fill a 2-core CPU that one small model leaves half idle.
"""

import dataclasses
import os
import time
from typing import Dict, List, Optional

from ssl_keras.compare.compare_config import CompareConfig
from ssl_keras.runs.config import (
    ConfigError,
    PretrainConfig,
    check_type,
    read_config_file,
    to_dict,
)
from ssl_keras.runs.run_directory import (
    RunDirectoryError,
    RunLock,
    make_directory,
    read_json,
    write_json_atomic,
)

EXPERIMENT_KEYS = ("name", "description", "out", "pretrain", "compare", "analysis", "workers")
PRETRAIN_REFERENCE = "pretrain:"
# Set by the experiment itself, so a file that gives them is refused rather than silently overridden.
_OWNED = {"pretrain": ("out", "resume"), "compare": ("out",)}


@dataclasses.dataclass
class AnalysisConfig:
    """What the experiment measures on top of the comparison's tables.

    `reference` is the backbone whose label efficiency is measured, at the label fractions `at`,
    against every other trained backbone, on `metric`. Grad-CAM draws `gradcam_images` test
    images per backbone (box and class targets) and averages the heatmap mass inside the
    ground-truth box over `gradcam_mass_images` test images (None: all).
    """

    reference: str = "ssl"
    at: List[float] = dataclasses.field(default_factory=lambda: [0.1, 0.25])
    metric: str = "mean_iou"
    gradcam_images: int = 4
    gradcam_mass_images: Optional[int] = None

    def validate(self):
        from ssl_keras.compare.compare_config import METRICS

        if self.metric not in METRICS:
            raise ConfigError(
                f"analysis.metric must be one of {', '.join(METRICS)}; got {self.metric!r}"
            )
        if not self.at or not all(isinstance(f, (int, float)) and 0 < f <= 1 for f in self.at):
            raise ConfigError(
                f"analysis.at must be a list of label fractions in (0, 1]; got {self.at!r}"
            )
        self.at = [float(f) for f in self.at]
        if self.gradcam_images < 0:
            raise ConfigError(
                f"analysis.gradcam_images must be an integer >= 0; got {self.gradcam_images!r}"
            )
        if self.gradcam_mass_images is not None and self.gradcam_mass_images < 1:
            raise ConfigError(
                f"analysis.gradcam_mass_images must be null or an integer >= 1; "
                f"got {self.gradcam_mass_images!r}"
            )
        return self


@dataclasses.dataclass
class Experiment:
    """A parsed and validated experiment file; see the module docstring for the format."""

    path: str
    name: str
    out: str
    pretrain: Dict[str, PretrainConfig]
    compare: CompareConfig
    analysis: AnalysisConfig
    description: str = ""
    workers: int = 1

    def record(self):
        """The resolved options, as stored in OUT/experiment.json and compared on continuation."""
        return {
            "name": self.name,
            "pretrain": {name: _options(config) for name, config in self.pretrain.items()},
            "compare": _options(self.compare),
            "analysis": to_dict(self.analysis),
        }


def _options(config):
    return {key: value for key, value in to_dict(config).items() if key not in ("out", "resume")}


def load_experiment(path):
    """Reads, resolves and validates an experiment file.

    Raises:
        ConfigError: naming the file, the section and the problem (unknown key, wrong type,
            bad value, a `pretrain:NAME` that no stage defines, ...).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"experiment file {path}: no such file")
    values = read_config_file(path)
    where = f"experiment file {path}"
    unknown = sorted(set(values) - set(EXPERIMENT_KEYS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(EXPERIMENT_KEYS)}"
        )
    for key in ("out", "compare"):
        if key not in values:
            raise ConfigError(f"{where}: the key {key!r} is missing")
    name = str(values.get("name") or os.path.splitext(os.path.basename(path))[0])
    out = values["out"]
    if not isinstance(out, str) or not out.strip():
        raise ConfigError(f"{where}: out must be a folder path; got {out!r}")

    pretrain_values = values.get("pretrain") or {}
    if not isinstance(pretrain_values, dict):
        raise ConfigError(
            f"{where}: pretrain must map stage names to pretrain options; got {pretrain_values!r}"
        )
    pretrain = {}
    for stage, options in pretrain_values.items():
        stage = str(stage)
        if not _is_label(stage):
            raise ConfigError(
                f"{where}: pretrain stage name {stage!r} must be letters, digits, . _ + -"
            )
        section = f"{where}, pretrain.{stage}"
        options = _section(section, options, PretrainConfig, _OWNED["pretrain"])
        pretrain[stage] = _build(
            section, PretrainConfig, options, out=os.path.join(out, "pretrain", stage)
        )

    section = f"{where}, compare"
    compare_values = _section(section, values["compare"], CompareConfig, _OWNED["compare"])
    compare_values["backbones"] = _resolve_backbones(
        section, compare_values.get("backbones"), pretrain, out
    )
    compare = _build(section, CompareConfig, compare_values, out=os.path.join(out, "compare"))

    section = f"{where}, analysis"
    analysis = _build(
        section, AnalysisConfig, _section(section, values.get("analysis") or {}, AnalysisConfig, ())
    )
    labels = [label for label, _ in compare.labelled_backbones()]
    if analysis.reference not in labels:
        raise ConfigError(
            f"{section}: reference {analysis.reference!r} is not one of the compared backbones "
            f"({', '.join(labels)})"
        )
    workers = values.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{where}: workers must be an integer >= 1; got {workers!r}")
    return Experiment(
        path=os.path.abspath(path),
        name=name,
        out=out,
        pretrain=pretrain,
        compare=compare,
        analysis=analysis,
        description=str(values.get("description") or "").strip(),
        workers=workers,
    )


def _is_label(text):
    from ssl_keras.compare.compare_config import LABEL_PATTERN

    return bool(LABEL_PATTERN.match(text))


def _section(where, options, cls, owned):
    """Checks one section's keys and value types against the dataclass `cls`."""
    if not isinstance(options, dict):
        raise ConfigError(f"{where}: must be a mapping of option names to values; got {options!r}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in options:
        if key in owned:
            raise ConfigError(
                f"{where}: {key!r} is set by the experiment (under its out folder); remove it"
            )
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown option {key!r}; known: "
                f"{', '.join(sorted(set(fields) - set(owned)))}"
            )
        check_type(where, key, options[key], fields[key].type)
    return dict(options)


def _build(where, cls, options, **owned):
    try:
        return cls(**options, **owned).validate()
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def _resolve_backbones(where, backbones, pretrain, out):
    """Replaces `pretrain:NAME` with the encoder that stage writes; the label defaults to NAME."""
    if backbones is None:
        raise ConfigError(
            f"{where}: backbones is missing (e.g. [ssl=pretrain:ssl, scratch, imagenet])"
        )
    entries = backbones.split(",") if isinstance(backbones, str) else list(backbones)
    resolved = []
    for entry in entries:
        entry = str(entry).strip()
        name, sep, rest = entry.partition("=")
        label, spec = (name, rest) if sep and rest else (None, entry)
        if spec.startswith(PRETRAIN_REFERENCE):
            stage = spec[len(PRETRAIN_REFERENCE) :]
            if stage not in pretrain:
                raise ConfigError(
                    f"{where}: backbone {entry!r} names the pretrain stage {stage!r}, which the file "
                    f"does not define (stages: {', '.join(pretrain) or 'none'})"
                )
            directory = pretrain[stage].out
            spec = f"ssl:{directory}" if pretrain[stage].method == "simclr" else directory
            label = label or stage
        resolved.append(f"{label}={spec}" if label else spec)
    return resolved


def stage_dirs(experiment):
    """{pretrain stage: its run directory}, absolute."""
    return {name: os.path.abspath(config.out) for name, config in experiment.pretrain.items()}


def prepare_experiment_directory(experiment, *, log=print):
    """Creates OUT and writes experiment.json, or checks that OUT holds the same experiment."""
    out = os.path.abspath(experiment.out)
    record_path = os.path.join(out, "experiment.json")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirectoryError(
            f"out {out} (experiment file {experiment.path}) is a file, not a directory"
        )
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(record_path):
            raise RunDirectoryError(
                f"out {out} (experiment file {experiment.path}) exists, is not empty and holds "
                "no experiment.json; choose another out (nothing there was changed)"
            )
        stored = read_json(record_path)
        differences = _differences(stored.get("options", {}), experiment.record())
        if differences:
            raise RunDirectoryError(
                f"out {out} holds an experiment with other options ({'; '.join(differences[:5])}); restore them "
                f"in {experiment.path} to continue it, or give the file another out (nothing there was changed)"
            )
        log(f"[experiment] continuing {experiment.name} in {out}")
        return out, stored
    make_directory(out, what="the experiment's out")
    from ssl_keras.runs.run_directory import environment_info

    stored = {
        "command": "experiment",
        "file": experiment.path,
        "options": experiment.record(),
        "environment": environment_info(),
        "invocations": [],
    }
    write_json_atomic(record_path, stored)
    log(f"[experiment] {experiment.name}: new experiment in {out}")
    return out, stored


def _differences(stored, given, prefix=""):
    found = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key), given.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, prefix + key + ".")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} there, {b!r} now")
    return found


def run_stage(config, *, verbose=0, log=print):
    """Runs one pretraining stage (in this process or a worker) and frees its graphs."""
    import keras

    from ssl_keras.pretraining.pretrain import run_pretrain

    try:
        return run_pretrain(config, verbose=verbose, log=log)
    finally:
        keras.backend.clear_session()


def run_experiment(experiment, *, log=print, verbose=0, workers=None):
    """Runs (or continues) every stage of `experiment`, then its analysis and report.

    Args:
        experiment: an `Experiment` from `load_experiment`.
        log: callable taking one string, for progress lines. Defaults to `print`.
        verbose: int, Keras progress verbosity of the training stages. Defaults to 0.
        workers: None (the file's `workers`), or int: pretraining stages and cells trained at
            once, each in its own process.

    Returns:
        A dict: `out`, `pretrain` ({stage: status}), `compare` (run_compare's summary),
        `analysis` (see `analyze_experiment`), `wall_seconds` of this invocation and
        `total_wall_seconds` over every invocation.
    """
    from ssl_keras.compare.compare import run_compare

    workers = experiment.workers if workers is None else workers
    started = time.perf_counter()
    out, record = prepare_experiment_directory(experiment, log=log)
    with RunLock(out, command="experiment"):  # a second run on this out is refused
        invocation = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "workers": workers,
            "stages": {},
            "finished": False,
        }
        record.setdefault("invocations", []).append(invocation)
        record_path = os.path.join(out, "experiment.json")

        def save(stage=None, stage_started=None):
            if stage:
                invocation["stages"][stage] = round(time.perf_counter() - stage_started, 1)
            invocation["wall_seconds"] = round(time.perf_counter() - started, 1)
            write_json_atomic(record_path, record)

        save()
        try:
            statuses = _run_pretrain_stages(
                experiment, workers=workers, verbose=verbose, save=save, log=log
            )
        finally:
            save()

        log(f"[experiment] comparison -> {os.path.abspath(experiment.compare.out)}")
        stage_started = time.perf_counter()
        try:
            summary = run_compare(
                experiment.compare,
                log=log,
                verbose=verbose,
                workers=workers,
                resume_hint="the same ssl-keras experiment command again (finished stages and cells "
                "are kept)",
            )
        finally:
            save("compare", stage_started)

        stage_started = time.perf_counter()
        analysis = analyze_experiment(experiment, summary, log=log)
        invocation["finished"] = True
        save("analysis", stage_started)
        total = sum(item.get("wall_seconds", 0) for item in record["invocations"])
        return {
            "out": out,
            "pretrain": statuses,
            "compare": summary,
            "analysis": analysis,
            "wall_seconds": time.perf_counter() - started,
            "total_wall_seconds": total,
            "invocations": len(record["invocations"]),
        }


def _run_pretrain_stages(experiment, *, workers, verbose, save, log):
    """Runs the unfinished pretraining stages, `workers` at a time; returns {stage: status}."""
    statuses, names, todo = {}, {}, []
    for index, (stage, config) in enumerate(experiment.pretrain.items(), start=1):
        names[stage] = f"[experiment] pretrain {index}/{len(experiment.pretrain)} {stage}"
        if os.path.isfile(os.path.join(os.path.abspath(config.out), "result.json")):
            log(f"{names[stage]}: done, skipped")
            statuses[stage] = "done"
        else:
            todo.append(stage)
    started = {}

    def start(stage):
        config = experiment.pretrain[stage]
        directory = os.path.abspath(config.out)
        resume = os.path.isfile(os.path.join(directory, "config.json"))
        log(
            f"{names[stage]} ({config.method}, {config.epochs} epochs at {config.image_size} px): "
            f"{'resuming' if resume else 'training'} -> {directory}"
        )
        statuses[stage] = "resumed" if resume else "trained"
        started[stage] = time.perf_counter()
        return dataclasses.replace(config, resume=resume)

    def done(stage, result):
        save(f"pretrain:{stage}", started[stage])
        log(f"{names[stage]}: done in {result.get('wall_seconds', 0):.0f} s")

    if workers > 1 and len(todo) > 1:
        from ssl_keras.runs.parallel_runs import run_parallel

        def on_error(stage, error):
            save(f"pretrain:{stage}", started[stage])
            return False

        run_parallel(
            todo,
            workers=workers,
            on_done=done,
            on_error=on_error,
            prepare=lambda stage: (
                "ssl_keras.experiment.experiment:run_stage",
                dict(config=start(stage), verbose=verbose),
            ),
            on_log=lambda stage, line: log(f"  [{stage}] {line}"),
        )
        return statuses
    for stage in todo:
        config = start(stage)
        try:
            result = run_stage(config, verbose=verbose, log=log)
        except BaseException:
            save(f"pretrain:{stage}", started[stage])
            raise
        done(stage, result)
    return statuses


def analyze_experiment(experiment, summary, *, log=print):
    """The experiment's own figures on top of the comparison: labels saved, Grad-CAM, report.md.

    Returns a dict with `labels_saved` (list of dicts), `gradcam` (dict or None) and
    `report` (path of OUT/report.md).
    """
    from ssl_keras.experiment import experiment_report

    return experiment_report.write_experiment_report(experiment, summary, log=log)
