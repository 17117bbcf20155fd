"""`--precision`: the SimCLR loss under mixed precision equals float32 within tolerance (issue 15)."""

import keras
import numpy as np
import pytest

from ssl_keras.backbone import make_backbone
from ssl_keras.pretraining.simclr import SimCLR


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def one_step_loss(policy):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    model = SimCLR(encoder=make_backbone("tiny"), augmenter=None, temperature=0.2)
    model.build((None, 32, 32, 3))
    images = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    projections = model(images, training=True)
    loss = model.compute_loss(y_pred=projections)
    return projections.dtype, loss.dtype, float(loss)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_equals_float32_within_tolerance(policy, restore_policy):
    _, _, reference = one_step_loss("float32")
    compute_dtype, loss_dtype, loss = one_step_loss(policy)
    assert compute_dtype == policy.split("_")[1]  # the model really ran in the low precision
    assert loss_dtype == "float32"  # NT-Xent is computed in float32
    assert loss == pytest.approx(reference, rel=2e-2)
    assert loss != reference
