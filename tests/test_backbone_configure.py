import os

import keras
import numpy as np
import pytest

from ssl_keras.backbone import build_backbone, configure_backbone
from test_case import run_model_saving_test


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")


def drop_rates(model):
    return [
        layer.rate
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout) and layer.name.endswith("drop")
    ]


@pytest.mark.large
def test_drop_connect_rate_rescales_every_block_and_survives_saving(images, tmp_path):
    model = build_backbone("EfficientNetB0")
    before = drop_rates(model)
    assert max(before) == pytest.approx(
        0.2 * (len(before) + 6) / 16, abs=0.03
    )  # Keras: linear to 0.2
    model, counts = configure_backbone(model, drop_connect_rate=0.1)
    after = drop_rates(model)
    assert counts["stochastic_depth_layers"] == len(before) > 0
    np.testing.assert_allclose(after, [r / 2 for r in before], rtol=1e-6)
    loaded = run_model_saving_test(model, images, tmp_path, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(drop_rates(loaded), after, rtol=1e-6)


@pytest.mark.large
def test_zero_init_residual_makes_every_residual_block_the_identity(images):
    model = build_backbone("EfficientNetB0")
    model, counts = configure_backbone(model, zero_init_residual=True)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert counts["zeroed_residual_branches"] == len(adds) > 0
    # keras.applications adds [branch, skip].
    probe = keras.Model(model.input, [[a.input[0], a.input[1], a.output] for a in adds])
    for branch, skip, total in probe(images, training=False):
        np.testing.assert_allclose(np.asarray(branch), 0.0, atol=1e-7)
        np.testing.assert_allclose(np.asarray(total), np.asarray(skip), atol=1e-6)
    # The first block of each stage has no skip connection and keeps its scale.
    assert float(np.abs(model.get_layer("block2a_project_bn").gamma.numpy()).min()) == 1.0


@pytest.mark.large
def test_bn_momentum_is_set_everywhere_and_moves_the_statistics_faster(images):
    keras.utils.set_random_seed(0)
    fast = build_backbone("EfficientNetB0")
    keras.utils.set_random_seed(0)
    slow = build_backbone("EfficientNetB0")
    fast, counts = configure_backbone(fast, bn_momentum=0.9, drop_connect_rate=0.0)
    slow, _ = configure_backbone(slow, drop_connect_rate=0.0)  # the same forward pass in both
    norms = [layer for layer in fast.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert counts["batch_norms"] == len(norms) and {n.momentum for n in norms} == {0.9}
    fast(images, training=True)
    slow(images, training=True)
    # Training uses batch statistics, so both saw the same ones; one update at 0.9 moves the
    # moving variance 10 times as far from its initial 1 as one at Keras's 0.99.
    for name in ("stem_bn", "block4a_bn", "top_bn"):
        moved_fast = np.abs(fast.get_layer(name).moving_variance.numpy() - 1)
        moved_slow = np.abs(slow.get_layer(name).moving_variance.numpy() - 1)
        np.testing.assert_allclose(moved_fast, 10 * moved_slow, rtol=1e-3, atol=1e-5)


@pytest.mark.large
def test_the_configured_copy_is_what_loading_its_file_gives_back(images, tmp_path):
    """A Dropout of rate 0 has no seed state once reloaded; the copy must not have one either,
    or a checkpoint's stored seed states no longer match the model that resumes from it."""
    from ssl_keras.runs.resumable import seed_generator_states

    original = build_backbone("EfficientNetB0")
    model, _ = configure_backbone(
        original, drop_connect_rate=0.0, bn_momentum=0.9, zero_init_residual=True
    )
    loaded = run_model_saving_test(model, images, tmp_path, atol=1e-6, rtol=1e-5)
    assert len(seed_generator_states(model)) == len(seed_generator_states(loaded)) == 0
    assert len(seed_generator_states(original)) > 0
    # Weights other than the zeroed gammas are the original's.
    np.testing.assert_array_equal(
        model.get_layer("stem_conv").kernel.numpy(), original.get_layer("stem_conv").kernel.numpy()
    )


@pytest.mark.large
def test_bad_settings_are_refused():
    model = build_backbone("EfficientNetB0")
    with pytest.raises(ValueError, match="drop_connect_rate"):
        configure_backbone(model, drop_connect_rate=1.0)
    with pytest.raises(ValueError, match="bn_momentum"):
        configure_backbone(model, bn_momentum=1.0)


def test_estimated_batch_norm_statistics_are_the_average_of_the_batch_statistics():
    from ssl_keras.backbone import estimate_batch_norm_statistics, tiny_backbone

    keras.utils.set_random_seed(0)
    model = tiny_backbone(width=4)
    batches = [
        np.random.default_rng(i).uniform(0, 255, (8, 16, 16, 3)).astype("float32") for i in range(3)
    ]
    conv = keras.Model(model.input, model.get_layer("conv0").output)
    stats = [np.asarray(conv(b)) for b in batches]
    means = np.mean([s.mean(axis=(0, 1, 2)) for s in stats], axis=0)
    variances = np.mean([s.var(axis=(0, 1, 2)) for s in stats], axis=0)
    weights = [w.copy() for w in model.get_weights()]
    assert estimate_batch_norm_statistics(model, batches) == 3
    bn = model.get_layer("bn0")
    np.testing.assert_allclose(bn.moving_mean.numpy(), means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variances, rtol=1e-3, atol=1e-5)
    assert bn.momentum == 0.99  # restored
    trainable_before = [w for w, v in zip(weights, model.weights) if v.trainable]
    for before, variable in zip(trainable_before, model.trainable_weights):
        np.testing.assert_array_equal(before, variable.numpy())


@pytest.mark.large
def test_partly_updated_statistics_make_all_features_alike_and_estimating_them_repairs_it(
    shared_data,
):
    import tensorflow as tf

    from ssl_keras.backbone import estimate_batch_norm_statistics
    from ssl_keras.data.image_files import read_image

    names = sorted(n for n in os.listdir(shared_data / "unlabeled") if n.endswith(".jpg"))[:32]
    images = np.stack(
        [
            read_image(tf.constant(str(shared_data / "unlabeled" / n)), image_size=64).numpy()
            for n in names
        ]
    )

    def mean_cosine(model):
        f = np.asarray(model(images, training=False))
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        return float((f @ f.T)[np.triu_indices(len(f), 1)].mean())

    keras.utils.set_random_seed(0)
    model = build_backbone("EfficientNetB1")
    rates = drop_rates(model)
    # As built, the (0, 1) statistics shrink the activations layer after layer, but they differ.
    assert mean_cosine(model) < 0.9
    # One training-mode step moves each moving mean 1% of the way (momentum 0.99): that small
    # common offset now dwarfs the shrunken signal, and every image gets the same direction.
    model(images, training=True)
    assert mean_cosine(model) > 0.999
    estimate_batch_norm_statistics(model, [images[:16], images[16:]])
    assert mean_cosine(model) < 0.9
    assert drop_rates(model) == rates  # stochastic depth restored
