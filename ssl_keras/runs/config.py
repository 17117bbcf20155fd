"""Run configurations: one dataclass per command, the single source of defaults.

Every field maps one to one onto a CLI option (underscores become dashes) and is written to the
run directory's `config.json`.
"""

import dataclasses
import json
import os
import typing
from typing import ClassVar, List, Optional


class ConfigError(ValueError):
    """An option or config-file value is out of range or unknown."""


PRETRAIN_METHODS = ("simclr", "supervised")
OPTIMIZERS = ("auto", "adamw", "lars", "lamb")
"""`--optimizer`: auto is AdamW below batch 1024, else LARS (see ssl_keras.optimizers)."""
DISTRIBUTE = ("auto", "none", "mirrored", "multi-worker", "data-parallel")
"""`--distribute` values (see `runs/distribution.py`)."""
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
"""`--precision` values: Keras dtype policies; the loss is computed in float32 in all of them."""
SIMCLR_IMAGE_SIZE = 224
SIMCLR_BLUR_SIGMA = (0.1, 2.0)
"""SimCLR's Gaussian-blur sigma range, in pixels of a 224-pixel image (Chen et al., 2020, B.9)."""


@dataclasses.dataclass
class PretrainConfig:
    """Options of `ssl-keras pretrain` (SimCLR pretraining).

    Images are float [0, 255] throughout; `image_size` is the square side the data pipeline
    resizes to.

    The defaults are the recipe measured to learn with EfficientNetB1 from random init on the
    2-core CPU (RESULTS.md, "Why EfficientNetB1 collapsed"); where it departs from the SimCLR
    paper (Chen et al., 2020), the paper's value is in the comment.
    """

    CHOICES: ClassVar[dict] = {
        "method": PRETRAIN_METHODS,
        "optimizer": OPTIMIZERS,
        "precision": PRECISIONS,
        "distribute": DISTRIBUTE,
    }
    """The fields with fixed values (a `click.Choice` on the command line)."""

    data: str = "synthetic"
    out: str = "runs/pretrain"
    method: str = "simclr"
    backbone: str = "EfficientNetB1"
    backbone_weights: Optional[str] = None
    drop_connect_rate: Optional[float] = 0.0  # None: Keras's 0.2 (the paper's ResNet has none)
    zero_init_residual: Optional[bool] = None  # None: on from random init; the paper: off
    bn_momentum: Optional[float] = 0.9  # the paper's (SimCLR's BN decay); None: Keras's 0.99
    epochs: int = 100
    batch_size: int = 256
    image_size: int = 224
    temperature: float = 0.2  # paper: 0.1 at batch 4096, 0.5 on CIFAR
    projection_dim: int = 128
    projection_hidden_dim: Optional[int] = None
    projection_layers: int = 2
    optimizer: str = "auto"
    learning_rate: Optional[float] = None
    weight_decay: Optional[float] = None
    warmup_epochs: Optional[float] = None
    jitter_strength: float = 1.0
    crop_area_min: float = 0.25  # paper: 0.08
    blur_sigma_max: Optional[float] = None
    label_smoothing: float = 0.1
    steps_per_epoch: Optional[int] = None
    seed: int = 0
    resume: bool = False
    mixed_precision: bool = False  # the former spelling of precision: mixed_float16
    precision: str = "float32"
    distribute: str = "auto"
    sync_bn: Optional[bool] = None  # None: on when several replicas share a step
    export: bool = True
    export_onnx: bool = False
    probe_data: Optional[str] = None
    probe_every: int = 1
    probe_max_per_class: int = 50

    def resolved_zero_init_residual(self):
        """`zero_init_residual`, or, when not given, on from random init and off with weights."""
        if self.zero_init_residual is not None:
            return bool(self.zero_init_residual)
        return not self.backbone_weights

    def resolved_warmup_epochs(self):
        """`warmup_epochs`, or a tenth of the run when not given (SimCLR: 10 of 100 epochs)."""
        return self.warmup_epochs if self.warmup_epochs is not None else self.epochs / 10.0

    def resolved_blur_sigma_range(self):
        """The blur sigma range in pixels: SimCLR's (0.1, 2.0) at 224 px, scaled to `image_size`.

        A sigma of 2 pixels removes most detail of a 64-pixel image but little of a 224-pixel
        one; scaling keeps the blur's strength relative to the image, as the kernel size
        (10% of the side) already is.
        """
        scale = self.image_size / SIMCLR_IMAGE_SIZE
        high = (
            self.blur_sigma_max if self.blur_sigma_max is not None else SIMCLR_BLUR_SIGMA[1] * scale
        )
        return (min(SIMCLR_BLUR_SIGMA[0] * scale, high), high)

    def validate(self):
        check_field_types(self)
        check_choices(self)
        _check_export_onnx(self.export_onnx)
        check_integers_at_least(
            self,
            epochs=1,
            probe_every=1,
            probe_max_per_class=1,
            projection_dim=1,
            projection_layers=1,
            steps_per_epoch=1,
        )
        check_option(
            self.batch_size >= 2,
            "batch_size",
            self.batch_size,
            "an integer >= 2 (pairs need negatives)",
        )
        _check_image_size(self.image_size, self.backbone)
        check_option(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        check_option(
            self.learning_rate is None or self.learning_rate > 0,
            "learning_rate",
            self.learning_rate,
            "> 0",
        )
        check_option(
            self.weight_decay is None or self.weight_decay >= 0,
            "weight_decay",
            self.weight_decay,
            ">= 0",
        )
        check_option(
            self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs,
            "warmup_epochs",
            self.warmup_epochs,
            f"in [0, epochs={self.epochs}] (or left out: a tenth of the epochs)",
        )
        check_option(self.jitter_strength >= 0, "jitter_strength", self.jitter_strength, ">= 0")
        check_option(0 < self.crop_area_min <= 1, "crop_area_min", self.crop_area_min, "in (0, 1]")
        check_option(
            self.blur_sigma_max is None or self.blur_sigma_max > 0,
            "blur_sigma_max",
            self.blur_sigma_max,
            "> 0",
        )
        check_option(
            0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)"
        )
        check_option(
            self.drop_connect_rate is None or 0 <= self.drop_connect_rate < 1,
            "drop_connect_rate",
            self.drop_connect_rate,
            "in [0, 1)",
        )
        check_option(
            self.bn_momentum is None or 0 < self.bn_momentum < 1,
            "bn_momentum",
            self.bn_momentum,
            "in (0, 1)",
        )
        if self.zero_init_residual and self.backbone_weights:
            raise ConfigError(
                "--zero-init-residual would erase the residual branches of --backbone-weights "
                f"{self.backbone_weights}; use --no-zero-init-residual with pretrained weights"
            )
        _check_devices(self)
        return self

    def resolved_precision(self):
        """`precision`, or `mixed_float16` where the former `mixed_precision` flag asks for it."""
        return "mixed_float16" if self.mixed_precision else self.precision


def _check_devices(config):
    """The former `mixed_precision` flag must not contradict `precision` (choices: `CHOICES`)."""
    if config.mixed_precision and config.precision not in ("float32", "mixed_float16"):
        raise ConfigError(
            f"--mixed-precision (mixed_float16) contradicts --precision {config.precision}; "
            "give one"
        )


def check_type(where, key, value, annotation):
    """Raises `ConfigError` unless `value` fits the field type `annotation`.

    `Optional[X]` and `Union[...]` allow each member, `List[X]` a list. A bool is not an int
    (YAML's `yes` must not become 1 epoch); an int is a float. The message names `where` (a
    config file, an experiment section) or, if None, the option, then the type and the value.
    """
    union = typing.get_origin(annotation) is typing.Union
    allowed = list(typing.get_args(annotation)) if union else [annotation]
    name = f"{where}: {key}" if where else f"--{key.replace('_', '-')}"
    if value is None:
        if type(None) in allowed:
            return
        raise ConfigError(f"{name} cannot be null")
    kinds = set()
    for kind in allowed:
        if typing.get_origin(kind) in (list, List) or kind is list:
            kinds.add(list)
        elif kind in (int, float, str, bool):
            kinds.add(kind)
    ok = (
        (bool in kinds and isinstance(value, bool))
        or (int in kinds and isinstance(value, int) and not isinstance(value, bool))
        or (float in kinds and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (str in kinds and isinstance(value, str))
        or (list in kinds and isinstance(value, list))
    )
    if not ok:
        names = " or ".join(sorted(kind.__name__ for kind in kinds)) or str(annotation)
        hint = ""
        if isinstance(value, str) and (int in kinds or float in kinds) and _is_number(value):
            yaml_exponent = "e" in value.lower() and "." not in value
            hint = " (a string; write it without quotes" + (
                ", with a dot, e.g. 1.0e-3: YAML reads 1e-3 as a string)" if yaml_exponent else ")"
            )
        raise ConfigError(f"{name} must be {names}; got {value!r}{hint}")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_field_types(config, *, where=None):
    """`check_type` for every field of the dataclass instance `config` (first step of `validate`)."""
    for field in dataclasses.fields(config):
        check_type(where, field.name, getattr(config, field.name), field.type)


def check_choices(config):
    """Raises `ConfigError` for a field of `config.CHOICES` whose value is not one of its choices."""
    for name, choices in config.CHOICES.items():
        value = getattr(config, name)
        check_option(value in choices, name, value, "one of " + ", ".join(choices))


def check_integers_at_least(config, **minimums):
    """`check_option` that each named field of `config` is None or an integer >= its minimum."""
    for name, minimum in minimums.items():
        value = getattr(config, name)
        check_option(value is None or value >= minimum, name, value, f"an integer >= {minimum}")


def check_option(ok, name, value, allowed):
    """Raises `ConfigError` naming the option `--name`, its value and what is `allowed`, unless `ok`."""
    if not ok:
        raise ConfigError(f"--{name.replace('_', '-')} must be {allowed}; got {value!r}")


def _check_export_onnx(export_onnx):
    """`--export-onnx` fails before anything trains when tf2onnx or onnx is not installed."""
    if export_onnx:
        from ssl_keras.runs.export import onnx_export_missing

        missing = onnx_export_missing()
        if missing:
            raise ConfigError(f"--export-onnx: {missing}")


MIN_IMAGE_SIZE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}
"""Smallest input side of the keras.applications models that need more than 32 pixels."""


def minimum_image_size(name):
    """Smallest square input side `name` accepts: 32 for most keras.applications models.

    Args:
        name: str, a keras.applications model name or `"tiny"`.

    Returns:
        int.
    """
    return MIN_IMAGE_SIZE.get(name, 32)


def _check_image_size(image_size, backbone_name):
    smallest = minimum_image_size(backbone_name) if backbone_name else 32
    allowed = f"an integer >= {smallest}" + (
        f" ({backbone_name}'s smallest input)" if smallest > 32 else ""
    )
    check_option(image_size >= smallest, "image_size", image_size, allowed)


def read_config_file(path):
    """Reads a JSON or YAML config file into a dict of field values."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot be read ({error.strerror})") from error
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except Exception as error:  # yaml and json raise different types
        raise ConfigError(
            f"config file {path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} ({error})"
        ) from error
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: must hold a mapping of option names to values")
    return values


def build_config(cls, *, config_file=None, **overrides):
    """Merges dataclass defaults < config file < explicitly given options (None = not given).

    With `resume=True` and an existing `out/config.json`, the stored run's options replace the
    dataclass defaults, so `--resume --out DIR` alone continues the run exactly as configured;
    options given explicitly (e.g. a larger `--epochs`) still override them.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    stored = _stored_options(overrides.get("out"), overrides.get("resume"))
    values.update({k: v for k, v in stored.items() if k in fields})
    if config_file:
        loaded = read_config_file(os.fspath(config_file))
        unknown = sorted(set(loaded) - fields)
        if unknown:
            raise ConfigError(
                f"config file {config_file}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(fields))}"
            )
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for key, value in loaded.items():
            check_type(f"config file {config_file}", key, value, types[key])
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values).validate()


def _stored_options(out, resume):
    if not resume or not out:
        return {}
    path = os.path.join(os.fspath(out), "config.json")
    if not os.path.isfile(path):
        return {}
    from ssl_keras.runs.run_directory import read_json  # a damaged file: one line naming it

    stored = read_json(path)
    return stored.get("options", {}) if isinstance(stored, dict) else {}


def to_dict(config):
    return dataclasses.asdict(config)


DETECT_MODES = ("freeze", "finetune", "freeze-then-finetune")
HEADS = ("pooled", "spatial")
"""The box heads of `ssl_keras.localization.box_heads` (by name, for `--head`)."""
PRIOR_BOX = "prior_box"
MAJORITY_CLASS = "majority_class"
"""The baselines' names (`ssl_keras.localization.box_baselines`): rows of the compare results,
so no backbone may take them as its label."""
CLASS_BALANCE = ("none", "weight")
MODEL_SELECTION = ("best-val", "last")
RESIZE_MODES = ("stretch", "letterbox")
DETECT_CHOICES = {
    "head": HEADS,
    "class_balance": CLASS_BALANCE,
    "model_selection": MODEL_SELECTION,
    "resize": RESIZE_MODES,
    "distribute": DISTRIBUTE,
}
"""The fixed-value options that `DetectConfig` and the compare grid share."""


@dataclasses.dataclass
class DetectConfig:
    """Options of `ssl-keras detect` (transfer to single-object localization).

    `backbone` is a pretrain run directory, an `encoder.keras` file, `imagenet` (downloaded),
    `imagenet:FILE` (a local ImageNet weights file) or `scratch`;
    `backbone_weights` (a local weights file) overrides it with `backbone_name` initialised
    from that file.
    """

    CHOICES: ClassVar[dict] = {"mode": DETECT_MODES, **DETECT_CHOICES}
    """The fields with fixed values (a `click.Choice` on the command line)."""

    data: str = "synthetic"
    backbone: str = "scratch"
    backbone_name: str = "EfficientNetB1"
    backbone_weights: Optional[str] = None
    out: str = "runs/detect"
    mode: str = "freeze-then-finetune"
    label_fraction: float = 1.0
    num_labeled: Optional[int] = None
    epochs: int = 20
    head_epochs: Optional[int] = None
    image_size: int = 224
    batch_size: int = 32
    learning_rate: float = 1e-3
    backbone_lr_multiplier: float = 0.1
    bn_momentum: Optional[float] = 0.9  # None: keep the backbone's (Keras: 0.99)
    weight_decay: float = 1e-4
    head: str = "spatial"
    spatial_channels: int = 128
    hidden_units: int = 256
    dropout: float = 0.2
    cache_features: bool = True
    class_balance: str = "none"
    model_selection: str = "best-val"
    box_weight: float = 1.0
    giou_weight: float = 1.0
    l1_weight: float = 1.0
    class_weight: float = 1.0
    resize: str = "stretch"
    augment: bool = True
    drop_split_overlap: bool = False  # Drop train ids also listed in val/test (VOC).
    seed: int = 0
    resume: bool = False
    distribute: str = "auto"
    sync_bn: Optional[bool] = None  # None: on when several replicas share a step
    export: bool = True
    export_onnx: bool = False

    def validate(self):
        check_field_types(self)
        check_choices(self)
        _check_export_onnx(self.export_onnx)
        check_option(
            self.spatial_channels >= 1, "spatial_channels", self.spatial_channels, "an integer >= 1"
        )
        check_option(self.hidden_units >= 0, "hidden_units", self.hidden_units, "an integer >= 0")
        check_option(
            0.0 < self.label_fraction <= 1.0, "label_fraction", self.label_fraction, "in (0, 1]"
        )
        check_option(
            self.num_labeled is None or self.num_labeled >= 1,
            "num_labeled",
            self.num_labeled,
            "an integer >= 1",
        )
        check_option(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check_option(
            self.head_epochs is None or 0 <= self.head_epochs <= self.epochs,
            "head_epochs",
            self.head_epochs,
            f"in [0, epochs={self.epochs}]",
        )
        _check_image_size(
            self.image_size,
            self.backbone_name
            if self.backbone in ("scratch", "imagenet")
            or self.backbone.startswith("imagenet:")
            or self.backbone_weights
            else None,
        )
        check_option(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check_option(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        check_option(
            0 < self.backbone_lr_multiplier <= 1,
            "backbone_lr_multiplier",
            self.backbone_lr_multiplier,
            "in (0, 1]",
        )
        check_option(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check_option(
            self.bn_momentum is None or 0 < self.bn_momentum < 1,
            "bn_momentum",
            self.bn_momentum,
            "in (0, 1)",
        )
        check_option(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        for name in ("box_weight", "giou_weight", "l1_weight", "class_weight"):
            check_option(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        return self

    def resolved_head_epochs(self):
        """Epochs with the backbone frozen: all (freeze), none (finetune), or a third by default."""
        if self.mode == "freeze":
            return self.epochs
        if self.mode == "finetune":
            return 0
        return self.head_epochs if self.head_epochs is not None else max(1, self.epochs // 3)


PROBE_METHODS = ("linear", "knn", "both")


@dataclasses.dataclass
class ProbeConfig:
    """Options of `ssl-keras probe` (a linear or kNN classifier on frozen backbone features).

    `backbone` is resolved as in `detect` (a pretrain run directory, `ssl:DIR`, an
    `encoder.keras` file, `imagenet` or `scratch`); `data` is a labelled source (`voc:PATH`, a
    manifest, `folder:PATH`, `synthetic[:N]`). `epochs` is the linear probe's, `k` and
    `temperature` the kNN probe's.
    """

    CHOICES: ClassVar[dict] = {"method": PROBE_METHODS}
    """The fields with fixed values (a `click.Choice` on the command line)."""

    backbone: str = "scratch"
    data: str = "synthetic"
    out: str = "runs/probe"
    method: str = "linear"
    image_size: int = 96
    batch_size: int = 64
    max_per_class: Optional[int] = None
    backbone_name: str = "EfficientNetB1"
    backbone_weights: Optional[str] = None
    seed: int = 0
    epochs: int = 100
    k: int = 20
    temperature: float = 0.07
    estimate_bn: bool = False

    def validate(self):
        check_field_types(self)
        check_choices(self)
        fixed_architecture = self.backbone in ("scratch", "imagenet") or self.backbone_weights
        _check_image_size(self.image_size, self.backbone_name if fixed_architecture else None)
        check_option(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check_option(
            self.max_per_class is None or self.max_per_class >= 1,
            "max_per_class",
            self.max_per_class,
            "an integer >= 1",
        )
        check_option(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check_option(self.k >= 1, "k", self.k, "an integer >= 1")
        check_option(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        return self
