"""Optimizers and the learning-rate schedule for pretraining: AdamW, LARS, Lamb, warm-up + cosine."""

import math

import keras
from keras import ops

# Variables that never get weight decay: batch-norm scale/shift and biases (SimCLR, LARS paper).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


@keras.saving.register_keras_serializable(package="ssl_keras")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak_learning_rate`, then cosine decay to `final_fraction` of it.

    Args:
        peak_learning_rate: float, learning rate at the end of warm-up.
        total_steps: int >= 1, number of optimizer steps of the whole run.
        warmup_steps: int >= 0, length of the linear warm-up. Defaults to 0.
        final_fraction: float in [0, 1], the last learning rate as a fraction of the peak.
            Defaults to 0.0.

    Example:

    >>> schedule = WarmupCosineDecay(peak_learning_rate=1e-3, total_steps=1000, warmup_steps=100)
    >>> float(schedule(100))
    0.001
    """

    def __init__(
        self,
        peak_learning_rate,
        total_steps,
        warmup_steps=0,
        final_fraction=0.0,
        name="warmup_cosine",
    ):
        if not peak_learning_rate > 0:
            raise ValueError(
                f"`peak_learning_rate` must be > 0. Received: peak_learning_rate={peak_learning_rate}"
            )
        if int(total_steps) < 1:
            raise ValueError(f"`total_steps` must be >= 1. Received: total_steps={total_steps}")
        if not 0 <= int(warmup_steps) <= int(total_steps):
            raise ValueError(
                f"`warmup_steps` must be in [0, total_steps={total_steps}]. Received: warmup_steps={warmup_steps}"
            )
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(
                f"`final_fraction` must be in [0, 1]. Received: final_fraction={final_fraction}"
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        self.name = name

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warm = self.peak_learning_rate * ops.minimum(step + 1.0, warmup) / warmup
        decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak_learning_rate * (
            self.final_fraction + (1.0 - self.final_fraction) * cosine
        )
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
            "name": self.name,
        }


@keras.saving.register_keras_serializable(package="ssl_keras")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al., 2017) with momentum, as used by SimCLR.

    Each variable's step is scaled by the trust ratio `eta * ||w|| / ||g + wd * w||`. Variables
    excluded from weight decay (biases, batch-norm parameters) are also excluded from the
    adaptation, as in SimCLR's implementation.

    Args:
        learning_rate: float or schedule. Defaults to 0.3.
        momentum: float in [0, 1). Defaults to 0.9.
        weight_decay: float >= 0, L2 coefficient added to the gradient. Defaults to 1e-6.
        trust_coefficient: float > 0, eta. Defaults to 0.001.
        epsilon: float. Defaults to 1e-9.
        no_decay_names: tuple of variable-name substrings excluded from decay and adaptation.
    """

    def __init__(
        self,
        learning_rate=0.3,
        momentum=0.9,
        weight_decay=1e-6,
        trust_coefficient=0.001,
        epsilon=1e-9,
        no_decay_names=NO_DECAY_NAMES,
        name="lars",
        **kwargs,
    ):
        # Weight decay is handled here (coupled, before the trust ratio), not by the base class.
        kwargs.pop("weight_decay", None)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1). Received: momentum={momentum}")
        self.momentum = float(momentum)
        self.lars_weight_decay = float(weight_decay)
        self.trust_coefficient = float(trust_coefficient)
        self.epsilon = float(epsilon)
        self.no_decay_names = tuple(no_decay_names)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = [self.add_variable_from_reference(v, "momentum") for v in variables]

    def _adapted(self, variable):
        return not any(part in variable.name for part in self.no_decay_names)

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        g = ops.cast(gradient, variable.dtype)
        m = self.momentums[self._get_variable_index(variable)]
        if self._adapted(variable):
            g = g + self.lars_weight_decay * variable
            w_norm = ops.norm(variable)
            g_norm = ops.norm(g)
            trust = ops.where(
                ops.logical_and(w_norm > 0, g_norm > 0),
                self.trust_coefficient * w_norm / (g_norm + self.epsilon),
                ops.ones_like(w_norm),
            )
            g = g * trust
        self.assign(m, self.momentum * m + g)
        self.assign_sub(variable, lr * m)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.lars_weight_decay,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "no_decay_names": list(self.no_decay_names),
            }
        )
        return config


def resolve_optimizer_name(name, batch_size):
    """`"auto"` picks AdamW below a batch of 1024 and LARS from there on."""
    if name == "auto":
        return "lars" if batch_size >= 1024 else "adamw"
    if name not in ("adamw", "lars", "lamb"):
        raise ValueError(
            f"optimizer must be one of auto, adamw, lars, lamb. Received: optimizer={name}"
        )
    return name


def default_learning_rate(name, batch_size):
    """Peak learning rates for a batch size.

    LARS follows SimCLR's linear rule, 0.3 * B / 256. AdamW and Lamb scale with the square root
    of the batch (SimCLR's appendix B.1 recommends square-root scaling below batch 1024): AdamW
    gets 1e-3 at batch 64, the rate measured to learn with EfficientNetB1 on the CPU
    (RESULTS.md), and 2e-3 at 256.
    """
    if name == "lars":
        return 0.3 * batch_size / 256.0
    base = {"adamw": 1e-3, "lamb": 2e-3}[name]
    return base * math.sqrt(batch_size / 64.0)


def default_weight_decay(name):
    return {"adamw": 0.05, "lars": 1e-6, "lamb": 0.05}[name]


def build_optimizer(
    name="adamw",
    *,
    learning_rate,
    total_steps,
    warmup_steps=0,
    weight_decay=None,
    batch_size=256,
    clipnorm=None,
):
    """Builds the pretraining optimizer with a warm-up + cosine schedule.

    Weight decay never applies to biases or batch-norm scale/shift.

    Args:
        name: `"auto"`, `"adamw"`, `"lars"` or `"lamb"`. Defaults to `"adamw"`.
        learning_rate: float, peak learning rate.
        total_steps: int, optimizer steps in the run (for the cosine decay).
        warmup_steps: int, linear warm-up steps. Defaults to 0.
        weight_decay: float or None (the optimizer's default). Defaults to None.
        batch_size: int, used by `"auto"`. Defaults to 256.
        clipnorm: float or None, per-variable gradient norm clipping. Defaults to None.

    Returns:
        A `keras.optimizers.Optimizer`.
    """
    name = resolve_optimizer_name(name, batch_size)
    if weight_decay is None:
        weight_decay = default_weight_decay(name)
    schedule = WarmupCosineDecay(learning_rate, total_steps, warmup_steps)
    if name == "lars":
        return LARS(learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm)
    cls = AdamW if name == "adamw" else Lamb
    return cls(learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm)


class _NoDecayNames:
    """Keeps `exclude_from_weight_decay(var_names=...)` in the optimizer's config.

    Keras optimizers forget their exclusions when saved, so a run resumed from a `.keras`
    checkpoint would start decaying biases and batch-norm parameters.
    """

    def _exclude_names(self, no_decay_names):
        self.no_decay_names = tuple(no_decay_names or ())
        if self.no_decay_names:
            self.exclude_from_weight_decay(var_names=list(self.no_decay_names))

    def get_config(self):
        config = super().get_config()
        config["no_decay_names"] = list(self.no_decay_names)
        return config


@keras.saving.register_keras_serializable(package="ssl_keras")
class AdamW(_NoDecayNames, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with no weight decay on variables named like `no_decay_names`.

    Args:
        no_decay_names: tuple of variable-name substrings excluded from weight decay, kept
            through save and load. Defaults to `NO_DECAY_NAMES` (biases, batch-norm).
        **kwargs: arguments of `keras.optimizers.AdamW`.
    """

    def __init__(self, no_decay_names=NO_DECAY_NAMES, **kwargs):
        super().__init__(**kwargs)
        self._exclude_names(no_decay_names)


@keras.saving.register_keras_serializable(package="ssl_keras")
class Lamb(_NoDecayNames, keras.optimizers.Lamb):
    """`keras.optimizers.Lamb` with no weight decay on `no_decay_names` (see `AdamW`)."""

    def __init__(self, no_decay_names=NO_DECAY_NAMES, **kwargs):
        super().__init__(**kwargs)
        self._exclude_names(no_decay_names)


@keras.saving.register_keras_serializable(package="ssl_keras")
class BackboneAdamW(_NoDecayNames, keras.optimizers.AdamW):
    """AdamW whose steps for the backbone's variables are scaled by `backbone_lr_multiplier`.

    Fine-tuning a pretrained backbone with a smaller learning rate than a fresh head keeps the
    pretrained features from being destroyed early on. Scaling gradients would not do this with
    Adam (its steps are invariant to gradient scale), so the learning rate itself is scaled.
    The backbone variables are registered with `set_backbone_variables` (done by
    `BoxRegressor.compile`), since variable objects cannot be serialised.

    Args:
        backbone_lr_multiplier: float in (0, 1]. Defaults to 0.1.
        no_decay_names: tuple of variable-name substrings excluded from weight decay (see
            `AdamW`). Defaults to `NO_DECAY_NAMES`.
        **kwargs: arguments of `keras.optimizers.AdamW`.
    """

    def __init__(self, backbone_lr_multiplier=0.1, no_decay_names=NO_DECAY_NAMES, **kwargs):
        super().__init__(**kwargs)
        self._exclude_names(no_decay_names)
        if not 0.0 < backbone_lr_multiplier <= 1.0:
            raise ValueError(
                f"`backbone_lr_multiplier` must be in (0, 1]. Received: backbone_lr_multiplier={backbone_lr_multiplier}"
            )
        self.backbone_lr_multiplier = float(backbone_lr_multiplier)
        self._backbone_keys = set()

    def set_backbone_variables(self, variables):
        self._backbone_keys = {self._var_key(v) for v in variables}

    def update_step(self, gradient, variable, learning_rate):
        if self._var_key(variable) in self._backbone_keys:
            learning_rate = learning_rate * self.backbone_lr_multiplier
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["backbone_lr_multiplier"] = self.backbone_lr_multiplier
        return config
