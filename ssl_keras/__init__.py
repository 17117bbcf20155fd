"""ssl_keras: SimCLR pretraining on unlabeled images and transfer to object localization.

All images entering models of this package are float tensors in [0, 255], shape [N, H, W, 3];
EfficientNet backbones rescale internally.
"""

import importlib

from ssl_keras import import_hooks, quiet_startup

# TensorFlow's C++ info lines (CUDA probes, oneDNN notices) are noise: TF_CPP_MIN_LOG_LEVEL=2,
# unless the user set it. The CLI also filters the start-up lines that ignore it.
quiet_startup.default_tensorflow_log_level()

SERIALIZABLE_MODULES = (
    "ssl_keras.optimizers",
    "ssl_keras.localization.box_augmenter",
    "ssl_keras.localization.box_heads",
    "ssl_keras.localization.box_losses",
    "ssl_keras.localization.box_metrics",
    "ssl_keras.localization.box_regressor",
    "ssl_keras.pretraining.ntxent_loss",
    "ssl_keras.pretraining.projection_head",
    "ssl_keras.pretraining.simclr",
    "ssl_keras.pretraining.simclr_augmenter",
    "ssl_keras.pretraining.supervised",
)
"""Every module that registers a serializable (`keras.saving.register_keras_serializable`).

They import Keras and NumPy only (no TensorFlow Datasets, no keras-cv); tests/test_package.py
checks that `import ssl_keras` registers them all.
"""


def register_serializables():
    """Imports every module of `SERIALIZABLE_MODULES`, so `keras.saving.load_model` finds their classes."""
    for module in SERIALIZABLE_MODULES:
        importlib.import_module(module)


# `import ssl_keras` is enough for `keras.saving.load_model` of any file this package writes, yet
# does not import Keras itself (seconds, and `ssl-keras --help` must be instant): the classes are
# registered as soon as Keras is imported (see ssl_keras.import_hooks).
import_hooks.after_import("keras", register_serializables)
quiet_startup.install_if_requested()

__version__ = "0.1.0"
