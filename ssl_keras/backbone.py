"""Backbone factory: a `keras.applications` network that maps [0, 255] images to pooled features."""

import json
import os

import keras

from ssl_keras.data.download_host import network_available

from ssl_keras.runs.config import MIN_IMAGE_SIZE, minimum_image_size  # noqa: F401 - re-exported

# Families whose keras.applications constructor rescales [0, 255] inputs itself.
_SELF_PREPROCESSING = ("EfficientNet", "ConvNeXt", "RegNet", "MobileNetV3")
# Families that expect inputs in [-1, 1] ("tf" mode of preprocess_input).
_MINUS_ONE_TO_ONE = (
    "MobileNet",
    "MobileNetV2",
    "ResNet50V2",
    "ResNet101V2",
    "ResNet152V2",
    "InceptionV3",
    "InceptionResNetV2",
    "Xception",
    "NASNet",
)
# Families that expect ImageNet mean/std normalised inputs ("torch" mode).
_MEAN_STD = ("DenseNet",)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneWeightsError(RuntimeError):
    """Requested backbone weights cannot be had (offline, missing or incompatible file)."""


def _preprocessing_for(name):
    if name.startswith(_SELF_PREPROCESSING):
        return None
    if name.startswith(_MEAN_STD):
        mean = [255.0 * m for m in _IMAGENET_MEAN]
        var = [(255.0 * s) ** 2 for s in _IMAGENET_STD]
        return keras.layers.Normalization(mean=mean, variance=var, name="imagenet_normalization")
    if name.startswith(_MINUS_ONE_TO_ONE):
        return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale_to_pm1")
    raise ValueError(
        f"backbone '{name}' expects caffe-style (BGR, mean-subtracted) inputs, which ssl_keras "
        "does not wrap; use an EfficientNet, EfficientNetV2, ConvNeXt, RegNet, MobileNet, "
        f"ResNetV2, DenseNet, Inception or Xception backbone. Received: name={name}"
    )


def _cached_weights_present(name):
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
    if not os.path.isdir(cache):
        return False
    stem = name.lower()
    return any(f.startswith(stem) and "notop" in f for f in os.listdir(cache))


def build_backbone(
    name="EfficientNetB1", *, weights=None, input_shape=(None, None, 3), pooling="avg"
):
    """Builds an image backbone that takes images in [0, 255] and returns pooled features.

    EfficientNet (the default), EfficientNetV2, ConvNeXt, RegNet and MobileNetV3 rescale their
    inputs internally; for the other supported families a rescaling layer is prepended so the
    package-wide convention holds: **inputs are float images in [0, 255]**.

    Args:
        name: string, a `keras.applications` constructor name. Defaults to `"EfficientNetB1"`.
        weights: None (random initialisation), `"imagenet"` (downloaded by Keras; offline this
            fails within seconds with a `BackboneWeightsError` explaining how to pass a local
            file), or the path of a local weights file (e.g. Keras's
            `efficientnetb1_notop.h5`). Defaults to None.
        input_shape: tuple, input shape without the batch dimension. Defaults to
            `(None, None, 3)`: any image size.
        pooling: `"avg"` or `"max"`, global pooling of the last feature map. Defaults to `"avg"`.

    Returns:
        A functional `keras.Model` mapping [N, H, W, 3] images in [0, 255] to [N, C] features.

    Example:

    >>> backbone = build_backbone("EfficientNetB1", weights=None)
    >>> features = backbone(images)  # [N, 1280]
    """
    constructor = getattr(keras.applications, name, None)
    if constructor is None or not callable(constructor):
        raise ValueError(f"unknown keras.applications backbone. Received: name={name}")
    if weights not in (None, "imagenet"):
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise BackboneWeightsError(f"backbone weights file {weights} does not exist")
    if weights == "imagenet" and not _cached_weights_present(name) and not network_available():
        raise BackboneWeightsError(
            f"ImageNet weights for {name} cannot be downloaded (no network). Download "
            f"'{name.lower()}_notop.h5' from the Keras applications release elsewhere, copy it "
            "here and pass its path as the weights (CLI: --backbone-weights FILE), or put it in "
            "~/.keras/models/."
        )
    preprocessing = _preprocessing_for(name)
    kwargs = dict(include_top=False, weights=weights, input_shape=input_shape, pooling=pooling)
    try:
        network = constructor(**kwargs)
    except (ValueError, OSError) as error:
        if weights in (None, "imagenet"):
            raise
        raise BackboneWeightsError(
            f"weights file {weights} does not fit {name}: {error}"
        ) from error
    if preprocessing is None:
        return network
    inputs = keras.Input(shape=input_shape, name="images")
    return keras.Model(inputs, network(preprocessing(inputs)), name=f"{network.name}_0_255")


def tiny_backbone(*, width=16, input_shape=(None, None, 3)):
    """A few-thousand-parameter conv net with the backbone contract, for tests and quick demos.

    Args:
        width: int, channels of the first conv layer (doubled in the second and third).
            Defaults to 16.
        input_shape: tuple. Defaults to `(None, None, 3)`.

    Returns:
        A functional model mapping [N, H, W, 3] images in [0, 255] to [N, 4 * width] features.
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    for i, channels in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(
            channels, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="tiny_backbone")


def make_backbone(name="EfficientNetB1", *, weights=None):
    """`build_backbone`, plus the name `"tiny"` for `tiny_backbone` (tests, smoke runs)."""
    if name == "tiny":
        if weights is not None:
            raise ValueError(
                f"the tiny backbone has no pretrained weights. Received: weights={weights}"
            )
        return tiny_backbone()
    return build_backbone(name, weights=weights)


# keras.applications builds EfficientNet (v1 and v2) with stochastic depth rising linearly to 0.2.
_KERAS_DROP_CONNECT_RATE = 0.2


def _all_layers(model):
    """Every layer of `model`, nested models' layers included (depth first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _residual_blocks(model):
    """Prefixes of the blocks of `model` that end in a residual add (`<prefix>add`)."""
    return [
        layer.name[: -len("add")]
        for layer in _all_layers(model)
        if isinstance(layer, keras.layers.Add) and layer.name.endswith("add")
    ]


def _edit_layer_configs(config, edit):
    """Calls `edit(class_name, layer_config)` on every layer config of a (nested) functional config."""
    for layer in config.get("layers", []):
        edit(layer["class_name"], layer["config"])
        if "layers" in layer["config"]:
            _edit_layer_configs(layer["config"], edit)


def configure_backbone(
    model, *, drop_connect_rate=None, zero_init_residual=False, bn_momentum=None
):
    """A copy of a backbone with another stochastic depth, residual init and batch-norm momentum.

    Settings that decide whether a deep residual network trained from random init learns
    under SimCLR at small batch (RESULTS.md, "Why EfficientNetB1 collapsed"):

    - `drop_connect_rate`: the stochastic-depth rate of the last block. keras.applications
      EfficientNets use 0.2, rising linearly from 0 in the first block; every block's rate is
      rescaled so that the last one has this rate (0 turns stochastic depth off).
    - `zero_init_residual`: sets the scale (gamma) of the batch norm that ends each residual
      branch to 0, so every residual block starts as the identity (Goyal et al., 2017). Only
      backbones whose residual branches end in `<block>project_bn` or `<block>project_BN`
      (EfficientNet v1/v2, MobileNetV2) are affected.
    - `bn_momentum`: the momentum of every batch norm's moving statistics. Keras uses 0.99;
      SimCLR uses 0.9. Training uses batch statistics either way, but inference (probes,
      frozen transfer, export) uses the moving ones, and in a deep network trained from random
      init they only become usable once the initial (0, 1) statistics have decayed through
      every layer: hundreds of steps at 0.99, tens at 0.9.

    The copy is rebuilt from the edited config (weights copied), so it is exactly what
    `keras.saving.load_model` gives back after saving it: a Dropout of rate 0, for one, has no
    random-seed state, and a checkpoint of the copy resumes with the same seed states.

    Args:
        model: a functional backbone from `build_backbone`.
        drop_connect_rate: float in [0, 1) or None (leave as built). Defaults to None.
        zero_init_residual: bool. Defaults to False.
        bn_momentum: float in (0, 1) or None (leave as built). Defaults to None.

    Returns:
        `(backbone, counts)`: the configured copy, and a dict with the number of
        stochastic-depth layers rescaled, of residual branches zeroed and of batch norms given
        the new momentum.

    Example:

    >>> backbone, counts = configure_backbone(build_backbone("EfficientNetB1"), drop_connect_rate=0.0,
    ...                                       zero_init_residual=True, bn_momentum=0.9)
    >>> counts
    {'stochastic_depth_layers': 16, 'zeroed_residual_branches': 16, 'batch_norms': 69}
    """
    if bn_momentum is not None and not 0.0 < bn_momentum < 1.0:
        raise ValueError(f"`bn_momentum` must be in (0, 1). Received: bn_momentum={bn_momentum}")
    if drop_connect_rate is not None and not 0.0 <= drop_connect_rate < 1.0:
        raise ValueError(
            f"`drop_connect_rate` must be in [0, 1). Received: drop_connect_rate={drop_connect_rate}"
        )
    counts = {"stochastic_depth_layers": 0, "zeroed_residual_branches": 0, "batch_norms": 0}

    def edit(class_name, config):
        if (
            drop_connect_rate is not None
            and class_name == "Dropout"
            and config.get("noise_shape")
            and config["name"].endswith("drop")
        ):
            config["rate"] = float(config["rate"]) * drop_connect_rate / _KERAS_DROP_CONNECT_RATE
            counts["stochastic_depth_layers"] += 1
        if bn_momentum is not None and class_name == "BatchNormalization":
            config["momentum"] = float(bn_momentum)
            counts["batch_norms"] += 1

    if drop_connect_rate is not None or bn_momentum is not None:
        config = model.get_config()
        _edit_layer_configs(config, edit)
        configured = model.__class__.from_config(config)
        configured.set_weights(model.get_weights())
        model = configured
    if zero_init_residual:
        layers = {layer.name: layer for layer in _all_layers(model)}
        for prefix in _residual_blocks(model):
            norm = layers.get(f"{prefix}project_bn") or layers.get(
                f"{prefix}project_BN"
            )  # MobileNetV2: _BN
            if isinstance(norm, keras.layers.BatchNormalization) and norm.scale:
                norm.gamma.assign(keras.ops.zeros_like(norm.gamma))
                counts["zeroed_residual_branches"] += 1
    return model, counts


def set_batch_norm_momentum(model, momentum):
    """Sets the moving-average momentum of every BatchNormalization in `model`; returns how many.

    Keras's 0.99 averages over about 100 steps. When fine-tuning moves the weights quickly,
    the moving statistics lag the batch statistics the network trains with, and its
    inference-mode outputs drift from its training-mode ones; 0.9 follows within about 10 steps.
    Set it before compiling: a compiled step keeps the value it was traced with.
    """
    norms = [
        layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for norm in norms:
        norm.momentum = float(momentum)
    return len(norms)


def estimate_batch_norm_statistics(model, batches):
    """Sets every batch norm's moving statistics to their exact average over `batches`.

    Moving statistics that are neither the initial (0, 1) nor converged, e.g. after a few
    hundred training steps at momentum 0.99, make a deep network's inference-mode features
    useless: each moving mean has moved part of the way, and that common offset dwarfs the
    signal, so every image gets the same direction (an EfficientNetB1 after one training-mode
    step: pairwise cosine > 0.999). Training-mode
    forward passes normalise with the batch statistics whatever the moving ones are, so
    running each batch with momentum k / (k + 1) leaves the running average of all of them
    ("precise BN", Wu & Johnson, 2021). Stochastic depth and dropout are off meanwhile; the
    weights are not changed.

    Args:
        model: a Keras model (e.g. a backbone).
        batches: an iterable of image batches (arrays or tensors), e.g. a few hundred images.

    Returns:
        int, the number of batches used.
    """
    layers = list(_all_layers(model))
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    drops = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [n.momentum for n in norms], [d.rate for d in drops]
    count = 0
    try:
        for d in drops:
            d.rate = 0.0
        for count, images in enumerate(batches, start=1):
            for n in norms:
                n.momentum = (count - 1) / count
            model(images, training=True)
    finally:
        for n, momentum in zip(norms, momenta):
            n.momentum = momentum
        for d, rate in zip(drops, rates):
            d.rate = rate
    return count


_GLOBAL_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def is_feature_map_backbone(model):
    """Whether `model` outputs a 4-D feature map `[N, h, w, C]` (not pooled features)."""
    return len(model.outputs[0].shape) == 4


def _one_input(model):
    # A list of one input makes Keras warn on every call with a plain tensor.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def feature_map_backbone(model):
    """The backbone without its final global pooling: images -> feature map `[N, h, w, C]`.

    The new model shares every layer (and weight) with `model`. A backbone that ends in a
    nested model (e.g. a rescaling layer in front of a keras.applications network) has the
    pooling removed inside the nested model.

    Args:
        model: a functional backbone ending in `GlobalAveragePooling2D` or
            `GlobalMaxPooling2D` (as `build_backbone` and the pretrain encoders do), or one that
            already outputs a feature map (returned as is).

    Returns:
        A functional `keras.Model`.

    Raises:
        ValueError: the backbone is not functional or does not end in a global pooling.

    Example:

    >>> feature_map_backbone(build_backbone("EfficientNetB1"))(images).shape  # [N, h, w, 1280]
    """
    if not isinstance(model, keras.Model) or not getattr(
        model, "_is_graph_network", bool(model.outputs)
    ):
        raise ValueError(
            f"a feature-map backbone needs a functional model. Received: {type(model).__name__}"
        )
    if is_feature_map_backbone(model):
        return model
    last = model.layers[-1]
    if isinstance(last, _GLOBAL_POOLING):
        return keras.Model(_one_input(model), last.input, name=f"{model.name}_feature_map")
    if isinstance(last, keras.Model):
        inner = feature_map_backbone(last)
        # clone_function=identity: the clone shares every layer with `model`; only the call
        # of the nested network is replaced by its pooling-free twin.
        clone = keras.models.clone_model(
            model,
            clone_function=lambda layer: layer,
            call_function=lambda layer, *args, **kwargs: (inner if layer is last else layer)(
                *args, **kwargs
            ),
        )
        return keras.Model(_one_input(clone), clone.outputs[0], name=f"{model.name}_feature_map")
    raise ValueError(
        f"backbone {model.name!r} does not end in a global pooling layer (its last layer is "
        f"{last.name!r}, {type(last).__name__}); pass a backbone whose output is a feature map or "
        "that ends in GlobalAveragePooling2D"
    )


def resolve_backbone(config):
    """Builds the backbone named by `config.backbone` / `config.backbone_weights`.

    Returns:
        `(backbone, description)`.
    """
    spec = config.backbone
    if config.backbone_weights:
        return (
            make_backbone(config.backbone_name, weights=config.backbone_weights),
            f"{config.backbone_name} from weights file {os.path.abspath(config.backbone_weights)}",
        )
    if spec == "scratch":
        return make_backbone(
            config.backbone_name, weights=None
        ), f"{config.backbone_name}, random initialisation"
    if spec == "imagenet":
        return make_backbone(
            config.backbone_name, weights="imagenet"
        ), f"{config.backbone_name}, ImageNet weights"
    if spec.startswith("imagenet:"):
        # A local copy of the ImageNet weights (e.g. Keras's efficientnetb1_notop.h5), for offline machines.
        weights = spec[len("imagenet:") :]
        return (
            make_backbone(config.backbone_name, weights=weights),
            f"{config.backbone_name}, ImageNet weights from {os.path.abspath(weights)}",
        )
    if spec.startswith("ssl:"):
        spec = spec[4:]
    path = os.path.join(spec, "encoder.keras") if os.path.isdir(spec) else spec
    if not os.path.isfile(path):
        raise BackboneWeightsError(
            f"--backbone {config.backbone}: no such pretrain run or encoder file ({path} not found); use a "
            "pretrain run directory, an encoder.keras file, 'imagenet' or 'scratch'"
        )
    try:
        backbone = keras.saving.load_model(path)
    except Exception as error:  # keras raises several types for a bad archive
        raise BackboneWeightsError(
            f"--backbone {path}: cannot be loaded as a Keras model ({error})"
        ) from error
    return backbone, f"{_pretrain_method(path)} encoder {os.path.abspath(path)}"


def _pretrain_method(encoder_path):
    """`SimCLR` or `supervised`, from the config.json of the run that wrote `encoder_path`."""
    config = os.path.join(os.path.dirname(os.path.abspath(encoder_path)), "config.json")
    try:
        with open(config, encoding="utf-8") as f:
            method = json.load(f).get("options", {}).get("method", "simclr")
    except (OSError, ValueError):
        return "pretrained"
    return {"simclr": "SimCLR", "supervised": "supervised"}.get(method, method)
