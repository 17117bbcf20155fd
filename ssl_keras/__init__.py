"""ssl_keras: SimCLR pretraining on unlabeled images and transfer to object localization.

All images entering models of this package are float tensors in [0, 255], shape [N, H, W, 3];
EfficientNet backbones rescale internally.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) is noise; the imports below
# load Keras (and so TensorFlow), so this must come first. `setdefault`: a user's setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Every module that registers a serializable (`keras.saving.register_keras_serializable`), so
# that `import ssl_keras` is enough for `keras.saving.load_model` of any file this package
# writes. They import Keras and NumPy only (no TensorFlow Datasets, no keras-cv);
# tests/test_package.py checks both.
import ssl_keras.optimizers  # noqa: E402,F401
import ssl_keras.localization.box_augmenter  # noqa: E402,F401
import ssl_keras.localization.box_heads  # noqa: E402,F401
import ssl_keras.localization.box_losses  # noqa: E402,F401
import ssl_keras.localization.box_metrics  # noqa: E402,F401
import ssl_keras.localization.box_regressor  # noqa: E402,F401
import ssl_keras.pretraining.ntxent_loss  # noqa: E402,F401
import ssl_keras.pretraining.projection_head  # noqa: E402,F401
import ssl_keras.pretraining.simclr  # noqa: E402,F401
import ssl_keras.pretraining.simclr_augmenter  # noqa: E402,F401
import ssl_keras.pretraining.supervised  # noqa: E402,F401

__version__ = "0.1.0"
