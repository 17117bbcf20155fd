import numpy as np

from ssl_keras.backbone import tiny_backbone
from ssl_keras.runs.export import export_encoder, load_serving


def test_encoder_endpoint_equals_inference_mode(tmp_path):
    encoder = tiny_backbone(width=8)
    images = np.random.default_rng(0).uniform(0, 255, (6, 40, 40, 3)).astype("float32")
    # Move the BatchNorm statistics away from their initial values so that inference and
    # training modes give clearly different outputs.
    for layer in encoder.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    path = export_encoder(encoder, tmp_path / "encoder_savedmodel")
    serve = load_serving(path)
    served = np.asarray(serve(images))
    np.testing.assert_allclose(
        served, np.asarray(encoder(images, training=False)), rtol=1e-5, atol=1e-5
    )
    assert not np.allclose(served, np.asarray(encoder(images, training=True)), atol=1e-3)
    # Any image size and batch size is accepted by the endpoint.
    assert np.asarray(serve(images[:2, :32, :32])).shape == (2, 32)


def test_export_replaces_an_older_export_only_when_complete(tmp_path):
    path = tmp_path / "encoder_savedmodel"
    export_encoder(tiny_backbone(width=4), path)
    export_encoder(tiny_backbone(width=8), path)
    assert not (tmp_path / "encoder_savedmodel.partial").exists()
    assert np.asarray(load_serving(path)(np.zeros((1, 32, 32, 3), "float32"))).shape == (1, 32)
