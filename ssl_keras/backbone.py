"""Backbone factory: a `keras.applications` network that maps [0, 255] images to pooled features."""

import os
import socket

import keras

# Families whose keras.applications constructor rescales [0, 255] inputs itself.
_SELF_PREPROCESSING = ("EfficientNet", "ConvNeXt", "RegNet", "MobileNetV3")
# Families that expect inputs in [-1, 1] ("tf" mode of preprocess_input).
_MINUS_ONE_TO_ONE = ("MobileNet", "MobileNetV2", "ResNet50V2", "ResNet101V2", "ResNet152V2",
                     "InceptionV3", "InceptionResNetV2", "Xception", "NASNet")
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


def _imagenet_weights_reachable(timeout=3.0):
    try:
        with socket.create_connection(("storage.googleapis.com", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_weights_present(name):
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")
    if not os.path.isdir(cache):
        return False
    stem = name.lower()
    return any(f.startswith(stem) and "notop" in f for f in os.listdir(cache))


def build_backbone(name="EfficientNetB1", *, weights=None, input_shape=(None, None, 3), pooling="avg"):
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
    if weights == "imagenet" and not _cached_weights_present(name) and not _imagenet_weights_reachable():
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
        raise BackboneWeightsError(f"weights file {weights} does not fit {name}: {error}") from error
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
        x = keras.layers.Conv2D(channels, 3, strides=2, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i}")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, outputs, name="tiny_backbone")


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


def make_backbone(name="EfficientNetB1", *, weights=None):
    """`build_backbone`, plus the name `"tiny"` for `tiny_backbone` (tests, smoke runs)."""
    if name == "tiny":
        if weights is not None:
            raise ValueError(f"the tiny backbone has no pretrained weights. Received: weights={weights}")
        return tiny_backbone()
    return build_backbone(name, weights=weights)
