"""`CompareConfig`: the options of `ssl-keras compare`, its grid axes and its cells.

It imports no stage (no Keras, no TensorFlow), so the CLI builds its options and `--help` at
once; `ssl_keras.compare.compare` runs the grid.
"""

import dataclasses
import os
import re
from typing import ClassVar, List, Optional, Union

from ssl_keras.runs.config import (
    DETECT_CHOICES,
    DETECT_MODES,
    ConfigError,
    MAJORITY_CLASS,
    PRIOR_BOX,
    DetectConfig,
    check_choices,
    check_field_types,
    check_option,
)

METRICS = ("mean_iou", "loc_acc@0.5", "loc_acc@0.7", "top1", "top3", "cls_loc_acc@0.5")
"""The headline metrics of every cell, in the order of the results table."""
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_DETECT = DetectConfig()


@dataclasses.dataclass
class CompareConfig:
    """Options of a backbone comparison: the grid axes plus the detect options shared by all cells.

    `backbones`, `label_fractions` and `modes` accept a list or a comma-separated string and are
    stored as lists. A backbone is a detect `--backbone` spec (`ssl:DIR`, a pretrain run
    directory, an `encoder.keras` file, `imagenet`, `scratch`), optionally prefixed `NAME=` to set
    its label; otherwise `ssl:DIR` is labelled `ssl`, `imagenet` and `scratch` themselves, and a
    path its basename. Seeds are `0 .. seeds - 1`. The remaining fields are passed to every
    cell's `DetectConfig` and default to its defaults, except `export` (off: cells are for
    measurement, and a SavedModel per cell costs time and disk). `freeze_epochs` sets the epochs
    of the `freeze` cells (None: `epochs`), since their epochs on cached features are cheap
    while a fine-tuning epoch costs a full backbone pass.
    """

    CHOICES: ClassVar[dict] = DETECT_CHOICES
    """The fields with fixed values (a `click.Choice` on the command line); `modes` is a list."""

    data: str = "synthetic"
    backbones: Union[str, List[str]] = "ssl:runs/pretrain,imagenet,scratch"
    label_fractions: Union[str, List[float]] = "0.1,0.5,1.0"
    modes: Union[str, List[str]] = "freeze,finetune"
    seeds: int = 3
    out: str = "runs/compare"
    backbone_name: str = _DETECT.backbone_name
    epochs: int = _DETECT.epochs
    freeze_epochs: Optional[int] = None
    head_epochs: Optional[int] = _DETECT.head_epochs
    image_size: int = _DETECT.image_size
    batch_size: int = _DETECT.batch_size
    learning_rate: float = _DETECT.learning_rate
    backbone_lr_multiplier: float = _DETECT.backbone_lr_multiplier
    bn_momentum: Optional[float] = _DETECT.bn_momentum
    weight_decay: float = _DETECT.weight_decay
    head: str = _DETECT.head
    spatial_channels: int = _DETECT.spatial_channels
    hidden_units: int = _DETECT.hidden_units
    dropout: float = _DETECT.dropout
    cache_features: bool = _DETECT.cache_features
    class_balance: str = _DETECT.class_balance
    model_selection: str = _DETECT.model_selection
    box_weight: float = _DETECT.box_weight
    giou_weight: float = _DETECT.giou_weight
    l1_weight: float = _DETECT.l1_weight
    class_weight: float = _DETECT.class_weight
    distribute: str = _DETECT.distribute
    sync_bn: Optional[bool] = _DETECT.sync_bn
    resize: str = _DETECT.resize
    augment: bool = _DETECT.augment
    export: bool = False

    def __post_init__(self):
        self.backbones = _split_list(self.backbones)
        self.modes = _split_list(self.modes)
        self.label_fractions = [_to_fraction(value) for value in _split_list(self.label_fractions)]

    def validate(self):
        check_field_types(self)
        check_choices(self)
        check_option(
            len(self.backbones) >= 1,
            "backbones",
            self.backbones,
            "one or more backbone specs, e.g. ssl:runs/pretrain,imagenet,scratch",
        )
        check_option(
            len(self.label_fractions) >= 1,
            "label_fractions",
            self.label_fractions,
            "one or more numbers in (0, 1]",
        )
        for fraction in self.label_fractions:
            check_option(
                0.0 < fraction <= 1.0,
                "label_fractions",
                fraction,
                "numbers in (0, 1], e.g. 0.1,0.5,1",
            )
        check_option(
            len(set(self.label_fractions)) == len(self.label_fractions),
            "label_fractions",
            self.label_fractions,
            "distinct numbers",
        )
        check_option(
            len(self.modes) >= 1, "modes", self.modes, "one or more of " + ", ".join(DETECT_MODES)
        )
        for mode in self.modes:
            check_option(
                mode in DETECT_MODES,
                "modes",
                mode,
                "a comma-separated list of " + ", ".join(DETECT_MODES),
            )
        check_option(len(set(self.modes)) == len(self.modes), "modes", self.modes, "distinct modes")
        check_option(
            isinstance(self.seeds, int) and self.seeds >= 1,
            "seeds",
            self.seeds,
            "an integer >= 1 (the number of seeds, run as 0 .. seeds-1)",
        )
        self.labelled_backbones()
        # Every cell's DetectConfig is checked now, so a bad value fails before anything trains.
        for cell in grid_cells(self):
            cell_config(self, cell)
        return self

    def labelled_backbones(self):
        """Returns `[(label, spec), ...]` in the given order; raises ConfigError on clashes."""
        baselines = (PRIOR_BOX, MAJORITY_CLASS)
        labelled, seen = [], {}
        for entry in self.backbones:
            label, spec = backbone_label(entry)
            if label in baselines:
                # The baseline rows of results.csv carry these names in the backbone column.
                raise ConfigError(
                    f"--backbones {entry!r}: the label {label!r} is reserved for a baseline row of "
                    f"the results; name it otherwise with NAME=SPEC, e.g. mine={spec}"
                )
            if label in seen:
                raise ConfigError(
                    f"--backbones: {seen[label]!r} and {entry!r} both get the label {label!r}; "
                    f"name them with NAME=SPEC, e.g. {label}2={spec}"
                )
            seen[label] = entry
            labelled.append((label, spec))
        return labelled


def _split_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


def _to_fraction(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"--label-fractions must be comma-separated numbers in (0, 1], e.g. 0.1,0.5,1; "
            f"got {value!r}"
        ) from None


def backbone_label(entry):
    """Splits a `--backbones` entry into `(label, spec)`.

    `NAME=SPEC` names the backbone; `ssl:DIR` is `ssl`; `imagenet` and `scratch` are themselves;
    any other spec (a pretrain run directory or an encoder file) is labelled by its basename.

    Example:

    >>> backbone_label("ssl:runs/p1")
    ('ssl', 'ssl:runs/p1')
    >>> backbone_label("p50=runs/p1/encoder.keras")
    ('p50', 'runs/p1/encoder.keras')
    """
    entry = str(entry).strip()
    name, sep, rest = entry.partition("=")
    if sep and LABEL_PATTERN.match(name) and rest:
        label, spec = name, rest
    elif entry.startswith("ssl:"):
        label, spec = "ssl", entry
    elif entry in ("imagenet", "scratch"):
        label, spec = entry, entry
    elif entry.startswith("imagenet:"):
        label, spec = "imagenet", entry
    else:
        label, spec = os.path.basename(os.path.normpath(entry)), entry
    if not LABEL_PATTERN.match(label):
        raise ConfigError(
            f"--backbones {entry!r}: the label {label!r} is not usable as a folder name; "
            f"give one with NAME=SPEC (letters, digits, . _ + -), e.g. mine={entry}"
        )
    return label, spec


@dataclasses.dataclass(frozen=True)
class Cell:
    """One detect run of the grid; `run_dir` is relative to the compare `out`."""

    label: str
    spec: str
    mode: str
    label_fraction: float
    seed: int

    @property
    def run_dir(self):
        return os.path.join(
            "cells", self.label, self.mode, f"frac{self.label_fraction}", f"seed{self.seed}"
        )

    @property
    def key(self):
        return (self.label, self.mode, self.label_fraction, self.seed)


def grid_cells(config):
    """The cells of the grid, seed outermost, so an interrupted grid has whole comparisons first."""
    return [
        Cell(label, spec, mode, fraction, seed)
        for seed in range(config.seeds)
        for fraction in config.label_fractions
        for mode in config.modes
        for label, spec in config.labelled_backbones()
    ]


def cell_config(config, cell, *, resume=False):
    """The validated `DetectConfig` of one cell."""
    shared = {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(DetectConfig)
        if hasattr(config, field.name) and field.name not in ("out", "resume")
    }
    if cell.mode == "freeze" and config.freeze_epochs is not None:
        shared["epochs"] = config.freeze_epochs
        shared["head_epochs"] = None
    shared.update(
        backbone=cell.spec,
        mode=cell.mode,
        label_fraction=cell.label_fraction,
        seed=cell.seed,
        num_labeled=None,
        backbone_weights=None,
        out=os.path.join(config.out, cell.run_dir),
        resume=resume,
    )
    return DetectConfig(**shared).validate()
