"""ssl_keras: SimCLR pretraining on unlabeled images and transfer to object localization.

All images entering models of this package are float tensors in [0, 255], shape [N, H, W, 3];
EfficientNet backbones rescale internally.
"""

__version__ = "0.1.0"
