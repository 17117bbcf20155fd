"""Projection head of SimCLR: an MLP with batch normalisation."""

import keras


@keras.saving.register_keras_serializable(package="ssl_keras")
class ProjectionHead(keras.layers.Layer):
    """MLP that maps encoder features to the space where the contrastive loss is computed.

    Each hidden layer is Dense (no bias) -> BatchNorm -> ReLU; the output layer is Dense
    followed by BatchNorm without a learned shift, as in SimCLR v2. The paper's default is two
    layers (one hidden) ending in 128 dimensions.

    References:
        - [Chen et al., 2020](https://arxiv.org/abs/2002.05709), SimCLR.
        - [Chen et al., 2020](https://arxiv.org/abs/2006.10029), SimCLR v2.

    Args:
        output_dim: int, size of the projection. Defaults to 128.
        hidden_dim: int or None, width of the hidden layers; None uses the input width.
            Defaults to None.
        num_layers: int >= 1, number of Dense layers including the output. Defaults to 2.
        output_batch_norm: bool, whether to normalise the output. Defaults to True.

    Example:

    >>> head = ProjectionHead(output_dim=64, hidden_dim=256)
    >>> z = head(features)  # [N, 64]
    """

    def __init__(
        self, *, output_dim=128, hidden_dim=None, num_layers=2, output_batch_norm=True, **kwargs
    ):
        super().__init__(**kwargs)
        if int(output_dim) < 1:
            raise ValueError(f"`output_dim` must be >= 1. Received: output_dim={output_dim}")
        if hidden_dim is not None and int(hidden_dim) < 1:
            raise ValueError(
                f"`hidden_dim` must be >= 1 or None. Received: hidden_dim={hidden_dim}"
            )
        if int(num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1. Received: num_layers={num_layers}")
        self.output_dim = int(output_dim)
        self.hidden_dim = None if hidden_dim is None else int(hidden_dim)
        self.num_layers = int(num_layers)
        self.output_batch_norm = bool(output_batch_norm)
        self.hidden_layers = []

    def build(self, input_shape):
        width = self.hidden_dim or input_shape[-1]
        shape = input_shape
        for i in range(self.num_layers - 1):
            dense = keras.layers.Dense(width, use_bias=False, name=f"hidden_{i}")
            norm = keras.layers.BatchNormalization(name=f"hidden_{i}_bn")
            dense.build(shape)
            shape = dense.compute_output_shape(shape)
            norm.build(shape)
            self.hidden_layers.append((dense, norm))
        self.output_dense = keras.layers.Dense(
            self.output_dim, use_bias=not self.output_batch_norm, name="output"
        )
        self.output_dense.build(shape)
        self.output_norm = None
        if self.output_batch_norm:
            self.output_norm = keras.layers.BatchNormalization(center=False, name="output_bn")
            self.output_norm.build(self.output_dense.compute_output_shape(shape))

    def call(self, inputs, training=None):
        x = inputs
        for dense, norm in self.hidden_layers:
            x = keras.activations.relu(norm(dense(x), training=training))
        x = self.output_dense(x)
        if self.output_norm is not None:
            x = self.output_norm(x, training=training)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "output_dim": self.output_dim,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "output_batch_norm": self.output_batch_norm,
            }
        )
        return config
