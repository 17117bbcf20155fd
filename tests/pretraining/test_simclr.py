import textwrap

import keras
import numpy as np
import pytest

from ssl_keras.backbone import tiny_backbone
from ssl_keras.data.synthetic import make_synthetic_scene
from ssl_keras.pretraining.ntxent_loss import NTXentLoss
from ssl_keras.pretraining.projection_head import ProjectionHead
from ssl_keras.pretraining.simclr import SimCLR
from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter
from test_case import run_model_saving_test, run_on_backend, run_serialization_test


def scenes(n, size=32):
    return np.stack([make_synthetic_scene(i, image_size=size)[0] for i in range(n)]).astype(
        "float32"
    )


def small_simclr(seed=0):
    keras.utils.set_random_seed(seed)
    return SimCLR(
        tiny_backbone(width=8),
        projection_head=ProjectionHead(output_dim=16, hidden_dim=32),
        augmenter=SimCLRAugmenter(seed=seed, crop_area_min=0.3),
        temperature=0.2,
    )


def test_call_returns_two_views_of_projections():
    model = small_simclr()
    z = model(scenes(4), training=False)
    assert tuple(z.shape) == (8, 16)
    assert model.embed(scenes(4)).shape == (4, 32)


@pytest.mark.large
def test_fit_lowers_the_loss_and_logs_contrastive_accuracy():
    model = small_simclr()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    images = scenes(32)
    losses = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append(logs["loss"])

    history = model.fit(
        images, batch_size=16, epochs=12, verbose=0, callbacks=[Record()], shuffle=False
    )
    assert set(history.history) >= {"loss", "contrastive_accuracy"}
    # Keras reports running means within an epoch, so compare whole-epoch means.
    first, last = history.history["loss"][0], history.history["loss"][-1]
    assert last < first - 0.2, history.history["loss"]
    assert history.history["contrastive_accuracy"][-1] > history.history["contrastive_accuracy"][0]


def test_default_compile_is_adamw_without_decay_on_bn_and_bias():
    model = small_simclr()
    model.compile()
    model.build((None, 32, 32, 3))
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    bn_gamma = [v for v in model.trainable_variables if v.name == "gamma"][0]
    kernel = [v for v in model.trainable_variables if v.name == "kernel"][0]
    assert not model.optimizer._use_weight_decay(bn_gamma)
    assert model.optimizer._use_weight_decay(kernel)


def test_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(tiny_backbone(), temperature=0.0)


@pytest.mark.large
def test_keras_round_trip_keeps_config_weights_and_optimizer(tmp_path):
    model = small_simclr()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = scenes(16)
    model.fit(images, batch_size=8, epochs=1, verbose=0)
    restored = run_model_saving_test(
        model, images, tmp_path, call=SimCLR.embed, atol=1e-5, rtol=1e-5
    )
    assert restored.temperature == 0.2
    assert restored.augmenter.get_config() == model.augmenter.get_config()
    assert restored.projection_head.output_dim == 16
    features = model.embed(images)
    np.testing.assert_allclose(
        restored.projection_head(features, training=False),
        model.projection_head(features, training=False),
        rtol=1e-5,
        atol=1e-5,
    )
    assert int(restored.optimizer.iterations) == int(model.optimizer.iterations) == 2
    restored.fit(images, batch_size=8, epochs=1, verbose=0)  # continues training after loading
    assert int(restored.optimizer.iterations) == 4


@pytest.mark.large
def test_torch_backend_runs_the_training_step():
    script = textwrap.dedent(
        """
        import keras, numpy as np
        assert keras.config.backend() == "torch"
        from ssl_keras.backbone import tiny_backbone
        from ssl_keras.pretraining.projection_head import ProjectionHead
        from ssl_keras.pretraining.simclr import SimCLR
        from ssl_keras.pretraining.simclr_augmenter import SimCLRAugmenter
        keras.utils.set_random_seed(0)
        model = SimCLR(tiny_backbone(width=8), projection_head=ProjectionHead(output_dim=8),
                       augmenter=SimCLRAugmenter(seed=1))
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
        before = [np.array(v) for v in model.encoder.trainable_variables] if model.built else None
        h = model.fit(x, batch_size=8, epochs=2, verbose=0)
        loss = h.history["loss"]
        assert len(loss) == 2 and all(np.isfinite(loss)), loss
        assert "contrastive_accuracy" in h.history
        assert int(model.optimizer.iterations) == 4
        print("TORCH_OK", loss)
        """
    )
    result = run_on_backend("torch", script)
    assert "TORCH_OK" in result.stdout


def test_compile_refuses_metrics_instead_of_dropping_them():
    model = small_simclr()
    with pytest.raises(
        ValueError, match=r"Received: metrics=\['accuracy'\], weighted_metrics=None"
    ):
        model.compile(metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"Received: metrics=None, weighted_metrics=\['mae'\]"):
        model.compile(weighted_metrics=["mae"])
    with pytest.raises(ValueError, match=r"Received: loss_weights=\[1.0\]"):
        model.compile(loss_weights=[1.0])


@pytest.mark.large
def test_compile_loss_is_the_training_loss_and_is_saved(tmp_path):
    images = scenes(8)
    model = small_simclr()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=NTXentLoss(temperature=0.7))
    projections = model(images, training=False)
    z1, z2 = projections[:8], projections[8:]
    loss = float(model.compute_loss(y_pred=projections))
    assert loss == pytest.approx(float(NTXentLoss(temperature=0.7)(z1, z2)), rel=1e-5)
    assert loss != pytest.approx(
        float(NTXentLoss(temperature=0.2)(z1, z2)), rel=1e-3
    )  # not the default
    model.fit(images, batch_size=8, epochs=1, verbose=0)
    restored = run_model_saving_test(model, images, tmp_path, call=SimCLR.embed)
    assert (
        isinstance(restored.contrastive_loss, NTXentLoss)
        and restored.contrastive_loss.temperature == 0.7
    )
    # The default loss is not written, so files of default-compiled models are as before.
    plain = small_simclr()
    plain.compile()
    assert plain.get_compile_config()["loss"] is None


@pytest.mark.large
def test_augmenter_and_projection_head_follow_the_default_and_none_convention(tmp_path):
    default = SimCLR(tiny_backbone(width=8))
    assert isinstance(default.augmenter, SimCLRAugmenter) and isinstance(
        default.projection_head, ProjectionHead
    )
    images = scenes(4)
    keras.utils.set_random_seed(0)
    bare = SimCLR(tiny_backbone(width=8), augmenter=None, projection_head=None)
    z = keras.ops.convert_to_numpy(bare(images, training=False))
    # No augmenter: both views are the image itself; no head: the projections are the features.
    np.testing.assert_allclose(z[:4], z[4:], atol=1e-6)
    np.testing.assert_allclose(z[:4], keras.ops.convert_to_numpy(bare.embed(images)), atol=1e-5)
    clone, revived = run_serialization_test(bare)
    assert clone.augmenter is None and clone.projection_head is None
    assert revived.augmenter is None and revived.projection_head is None
    bare.compile()
    bare.fit(images, batch_size=4, epochs=1, verbose=0)
    restored = run_model_saving_test(
        bare, images, tmp_path, call=SimCLR.embed, atol=1e-5, rtol=1e-5
    )
    assert restored.augmenter is None and restored.projection_head is None
    for name in ("augmenter", "projection_head"):
        with pytest.raises(ValueError, match=f"Received: {name}='none'"):
            SimCLR(tiny_backbone(width=8), **{name: "none"})
