"""Run configurations: one dataclass per command, the single source of defaults.

Every field maps one to one onto a CLI option (underscores become dashes) and is written to the
run directory's `config.json`.
"""

import dataclasses
import json
import os
from typing import Optional


class ConfigError(ValueError):
    """An option or config-file value is out of range or unknown."""


PRETRAIN_METHODS = ("simclr", "supervised")
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
    mixed_precision: bool = False
    export: bool = True
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
        high = self.blur_sigma_max if self.blur_sigma_max is not None else SIMCLR_BLUR_SIGMA[1] * scale
        return (min(SIMCLR_BLUR_SIGMA[0] * scale, high), high)

    def validate(self):
        check_option(self.method in PRETRAIN_METHODS, "method", self.method, "one of " + ", ".join(PRETRAIN_METHODS))
        check_option(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check_option(self.probe_every >= 1, "probe_every", self.probe_every, "an integer >= 1")
        check_option(self.probe_max_per_class >= 1, "probe_max_per_class", self.probe_max_per_class, "an integer >= 1")
        check_option(self.batch_size >= 2, "batch_size", self.batch_size, "an integer >= 2 (pairs need negatives)")
        _check_image_size(self.image_size, self.backbone)
        check_option(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        check_option(self.projection_dim >= 1, "projection_dim", self.projection_dim, "an integer >= 1")
        check_option(self.projection_layers >= 1, "projection_layers", self.projection_layers, "an integer >= 1")
        check_option(self.optimizer in ("auto", "adamw", "lars", "lamb"), "optimizer", self.optimizer,
               "one of auto, adamw, lars, lamb")
        check_option(self.learning_rate is None or self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        check_option(self.weight_decay is None or self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check_option(self.warmup_epochs is None or 0 <= self.warmup_epochs <= self.epochs, "warmup_epochs",
               self.warmup_epochs, f"in [0, epochs={self.epochs}] (or left out: a tenth of the epochs)")
        check_option(self.jitter_strength >= 0, "jitter_strength", self.jitter_strength, ">= 0")
        check_option(0 < self.crop_area_min <= 1, "crop_area_min", self.crop_area_min, "in (0, 1]")
        check_option(self.blur_sigma_max is None or self.blur_sigma_max > 0, "blur_sigma_max", self.blur_sigma_max, "> 0")
        check_option(0 <= self.label_smoothing < 1, "label_smoothing", self.label_smoothing, "in [0, 1)")
        check_option(self.drop_connect_rate is None or 0 <= self.drop_connect_rate < 1, "drop_connect_rate",
               self.drop_connect_rate, "in [0, 1)")
        check_option(self.bn_momentum is None or 0 < self.bn_momentum < 1, "bn_momentum", self.bn_momentum, "in (0, 1)")
        if self.zero_init_residual and self.backbone_weights:
            raise ConfigError("--zero-init-residual would erase the residual branches of --backbone-weights "
                              f"{self.backbone_weights}; use --no-zero-init-residual with pretrained weights")
        check_option(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch",
               self.steps_per_epoch, "an integer >= 1")
        return self


def check_option(ok, name, value, allowed):
    """Raises `ConfigError` naming the option `--name`, its value and what is `allowed`, unless `ok`."""
    if not ok:
        raise ConfigError(f"--{name.replace('_', '-')} must be {allowed}; got {value!r}")


def _check_image_size(image_size, backbone_name):
    from ssl_keras.backbone import minimum_image_size

    smallest = minimum_image_size(backbone_name) if backbone_name else 32
    allowed = f"an integer >= {smallest}" + (f" ({backbone_name}'s smallest input)" if smallest > 32 else "")
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
        raise ConfigError(f"config file {path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} ({error})") from error
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
            raise ConfigError(f"config file {config_file}: unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(fields))}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values).validate()


def _stored_options(out, resume):
    if not resume or not out:
        return {}
    path = os.path.join(os.fspath(out), "config.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("options", {})


def to_dict(config):
    return dataclasses.asdict(config)


DETECT_MODES = ("freeze", "finetune", "freeze-then-finetune")
CLASS_BALANCE = ("none", "weight")
MODEL_SELECTION = ("best-val", "last")


@dataclasses.dataclass
class DetectConfig:
    """Options of `ssl-keras detect` (transfer to single-object localization).

    `backbone` is a pretrain run directory, an `encoder.keras` file, `imagenet` (downloaded),
    `imagenet:FILE` (a local ImageNet weights file) or `scratch`;
    `backbone_weights` (a local weights file) overrides it with `backbone_name` initialised
    from that file.
    """

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
    export: bool = True

    def validate(self):
        check_option(self.mode in DETECT_MODES, "mode", self.mode, "one of " + ", ".join(DETECT_MODES))
        from ssl_keras.localization.box_heads import HEADS

        check_option(self.head in HEADS, "head", self.head, "one of " + ", ".join(HEADS))
        check_option(self.spatial_channels >= 1, "spatial_channels", self.spatial_channels, "an integer >= 1")
        check_option(self.hidden_units >= 0, "hidden_units", self.hidden_units, "an integer >= 0")
        check_option(self.class_balance in CLASS_BALANCE, "class_balance", self.class_balance,
               "one of " + ", ".join(CLASS_BALANCE))
        check_option(self.model_selection in MODEL_SELECTION, "model_selection", self.model_selection,
               "one of " + ", ".join(MODEL_SELECTION))
        check_option(0.0 < self.label_fraction <= 1.0, "label_fraction", self.label_fraction, "in (0, 1]")
        check_option(self.num_labeled is None or self.num_labeled >= 1, "num_labeled", self.num_labeled, "an integer >= 1")
        check_option(self.epochs >= 1, "epochs", self.epochs, "an integer >= 1")
        check_option(self.head_epochs is None or 0 <= self.head_epochs <= self.epochs, "head_epochs", self.head_epochs,
               f"in [0, epochs={self.epochs}]")
        _check_image_size(self.image_size, self.backbone_name if self.backbone in ("scratch", "imagenet")
                          or self.backbone.startswith("imagenet:") or self.backbone_weights else None)
        check_option(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check_option(self.learning_rate > 0, "learning_rate", self.learning_rate, "a number > 0")
        check_option(0 < self.backbone_lr_multiplier <= 1, "backbone_lr_multiplier", self.backbone_lr_multiplier, "in (0, 1]")
        check_option(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check_option(self.bn_momentum is None or 0 < self.bn_momentum < 1, "bn_momentum", self.bn_momentum, "in (0, 1)")
        check_option(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")
        check_option(self.resize in ("stretch", "letterbox"), "resize", self.resize, "stretch or letterbox")
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
