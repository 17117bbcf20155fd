import keras
import numpy as np
import pytest

from ssl_keras.backbone import tiny_backbone
from ssl_keras.data.synthetic import make_synthetic_arrays
from ssl_keras.pretraining.supervised import SupervisedPretrainer, supervised_augmenter
from test_case import run_model_saving_test, run_serialization_test


def labelled(n=64, size=32):
    arrays = make_synthetic_arrays(num_images=n, image_size=size, seed=0)
    return arrays["image"].astype("float32"), arrays["labels"][:, 0].astype("int32")


def small_model(seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    return SupervisedPretrainer(
        tiny_backbone(width=8), num_classes=6, augmenter=supervised_augmenter(seed=seed), **kwargs
    )


def test_loss_is_the_softmax_cross_entropy_with_label_smoothing():
    model = small_model(label_smoothing=0.2)
    logits = np.array([[2.0, 0.0, -1.0, 0.5, 0.0, 1.0], [0.1, 0.2, 0.3, 0.4, 0.5, -0.6]], "float32")
    labels = np.array([0, 3])
    smooth = np.full((2, 6), 0.2 / 6) + 0.8 * np.eye(6)[labels]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(smooth * log_softmax).sum(1).mean()
    assert float(model.compute_loss(y=labels, y_pred=logits)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.large
def test_fit_lowers_the_loss_and_raises_the_accuracy():
    images, labels = labelled()
    model = small_model(label_smoothing=0.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(images, labels, batch_size=16, epochs=15, verbose=0, shuffle=False).history
    assert history["loss"][-1] < history["loss"][0] - 0.3, history["loss"]
    majority = np.bincount(labels).max() / len(labels)
    assert history["accuracy"][-1] > majority + 0.1, (history["accuracy"], majority)


def test_augmentation_runs_in_training_only():
    images, _ = labelled(4)
    model = small_model()
    np.testing.assert_allclose(
        np.asarray(model(images, training=False)), np.asarray(model(images, training=False))
    )
    assert not np.allclose(
        np.asarray(model(images, training=True)), np.asarray(model(images, training=False))
    )


def test_compile_refuses_a_loss_or_metrics_instead_of_dropping_them():
    model = small_model()
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="computes its own loss"):
        model.compile(metrics=["accuracy"])


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        SupervisedPretrainer(tiny_backbone(), num_classes=1)
    with pytest.raises(ValueError, match="label_smoothing"):
        SupervisedPretrainer(tiny_backbone(), num_classes=3, label_smoothing=1.0)


@pytest.mark.large
def test_keras_round_trip_keeps_config_weights_and_outputs(tmp_path):
    images, labels = labelled(16)
    model = small_model(label_smoothing=0.05)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    loaded = run_model_saving_test(model, images, tmp_path, atol=1e-5, rtol=1e-5)
    assert loaded.num_classes == 6 and loaded.label_smoothing == 0.05


def test_compile_refuses_loss_weights_and_an_unknown_augmenter_name():
    model = small_model()
    with pytest.raises(ValueError, match=r"Received: loss_weights=\[2.0\]"):
        model.compile(loss_weights=[2.0])
    with pytest.raises(ValueError, match="Received: augmenter='none'"):
        SupervisedPretrainer(tiny_backbone(width=8), num_classes=3, augmenter="none")


def test_augmenter_default_and_none_round_trip():
    def settings(augmenter):
        return {k: v for k, v in augmenter.get_config().items() if k != "name"}

    default = SupervisedPretrainer(tiny_backbone(width=8), num_classes=3)
    assert settings(default.augmenter) == settings(supervised_augmenter())
    bare = SupervisedPretrainer(tiny_backbone(width=8), num_classes=3, augmenter=None)
    assert all(copy.augmenter is None for copy in run_serialization_test(bare))
    for copy in run_serialization_test(default):
        assert settings(copy.augmenter) == settings(default.augmenter)


@pytest.mark.large
def test_weighted_metrics_are_honoured_and_restored(tmp_path):
    images, labels = labelled(16)
    model = small_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="weighted_accuracy")],
    )
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    # Weight 1 for the images of the first image's label, 0 for the others.
    weights = (labels == labels[0]).astype("float32")
    logs = model.evaluate(images, labels, sample_weight=weights, verbose=0, return_dict=True)
    assert "weighted_accuracy" in logs
    restored = run_model_saving_test(model, images, tmp_path)
    again = restored.evaluate(images, labels, sample_weight=weights, verbose=0, return_dict=True)
    assert again["weighted_accuracy"] == pytest.approx(logs["weighted_accuracy"])
