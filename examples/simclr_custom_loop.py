"""SimCLR pretraining from a user script with `model.fit`, composing the public API.

Run: python examples/simclr_custom_loop.py [IMAGE_FOLDER]   (default: the synthetic set)
"""

import sys

import keras

from ssl_keras.backbone import build_backbone
from ssl_keras.data.unlabeled_images import load_image_source
from ssl_keras.optimizers import build_optimizer
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter

source = load_image_source(
    sys.argv[1] if len(sys.argv) > 1 else "synthetic:256", image_size=64, batch_size=32
)
epochs = 2
model = SimCLR(
    build_backbone("EfficientNetB1", weights=None),
    augmenter=SimCLRAugmenter(jitter_strength=0.5, seed=1),
    temperature=0.2,
)
model.compile(
    optimizer=build_optimizer(
        "adamw",
        learning_rate=1e-3,
        total_steps=epochs * source.steps_per_epoch,
        warmup_steps=source.steps_per_epoch,
    ),
    jit_compile=False,  # on CPU TF graph mode is much faster than XLA
)
model.fit(
    source.dataset, epochs=epochs, callbacks=[keras.callbacks.TensorBoard("runs/example_logs")]
)
model.encoder.save("runs/example_encoder.keras")
print("features:", model.embed(next(iter(source.dataset))[:4]).shape)
