"""ONNX export (`--export-onnx`): ONNX Runtime gives the Keras model's inference outputs (issue 14)."""

import importlib.util
import json

import numpy as np
import pytest
from stand_ins import tiny_detect_run

from ssl_keras.backbone import tiny_backbone
from ssl_keras.runs import export
from ssl_keras.runs.config import ConfigError, DetectConfig, PretrainConfig
from ssl_keras.runs.export import ExportError, export_encoder, export_encoder_onnx

pytestmark = pytest.mark.large  # tf2onnx conversions

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    [feed] = session.get_inputs()
    assert feed.name == "images"
    return dict(zip(names, session.run(None, {feed.name: images})))


def _moved_batch_norm(model):
    # Inference and training modes then give clearly different outputs.
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, "float32"))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, "float32"))
    return model


def test_encoder_onnx_equals_inference_mode_at_any_size(tmp_path):
    encoder = _moved_batch_norm(tiny_backbone(width=8))
    images = np.random.default_rng(0).uniform(0, 255, (6, 40, 40, 3)).astype("float32")
    path = export_encoder_onnx(encoder, tmp_path / "encoder.onnx")
    [served] = _run(path, images).values()
    expected = np.asarray(encoder(images, training=False))
    np.testing.assert_allclose(served, expected, atol=1e-4)
    assert not np.allclose(served, np.asarray(encoder(images, training=True)), atol=1e-3)
    [small] = _run(path, images[:2, :32, :32]).values()
    assert small.shape == (2, 32)
    # Only the file is left: the temporary SavedModel it was converted from is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder.onnx"]


def test_constants_a_layer_captures_stay_inside_the_file(tmp_path):
    import keras

    # EfficientNet's input Normalization holds its mean and variance as constant tensors, which
    # a traced conversion (keras's model.export(format="onnx")) turns into two extra inputs.
    inputs = keras.Input((None, None, 3))
    normalized = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3e3, 2e3, 1e3])(
        inputs
    )
    encoder = keras.Model(inputs, tiny_backbone(width=8)(normalized))
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    [served] = _run(export_encoder_onnx(encoder, tmp_path / "encoder.onnx"), images).values()
    np.testing.assert_allclose(served, np.asarray(encoder(images, training=False)), atol=1e-4)


def test_an_exported_savedmodel_is_converted_as_it_is(tmp_path):
    encoder = _moved_batch_norm(tiny_backbone(width=8))
    savedmodel = export_encoder(encoder, tmp_path / "encoder_savedmodel")
    path = export_encoder_onnx(encoder, tmp_path / "encoder.onnx", savedmodel=savedmodel)
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    [served] = _run(path, images).values()
    np.testing.assert_allclose(served, np.asarray(encoder(images, training=False)), atol=1e-4)


def test_detect_writes_model_onnx_with_the_savedmodel_outputs(tmp_path):
    import keras

    from ssl_keras.localization.detect import detector_serving, load_run

    out = tmp_path / "run"
    _, metrics = tiny_detect_run(out, data="synthetic:60", export_onnx=True)
    assert metrics["outputs"]["onnx"] == str(out / "model.onnx")
    assert not (out / "savedmodel").exists()
    model, _ = load_run(str(out))
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    served = _run(out / "model.onnx", images)
    expected = detector_serving(model)(images)
    assert set(served) == {"boxes", "class_probs"}
    for key in served:
        np.testing.assert_allclose(
            served[key], keras.ops.convert_to_numpy(expected[key]), atol=1e-4
        )
    assert json.loads((out / "config.json").read_text())["options"]["export_onnx"] is True


def test_without_tf2onnx_the_option_fails_before_anything_runs(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"--export-onnx: .*tf2onnx.*ssl_keras\[onnx\]"):
        DetectConfig(data="synthetic:60", out=str(tmp_path / "d"), export_onnx=True).validate()
    with pytest.raises(ConfigError, match="--export-onnx"):
        PretrainConfig(data="synthetic:60", out=str(tmp_path / "p"), export_onnx=True).validate()
    with pytest.raises(ExportError, match="tf2onnx"):
        export.export_encoder_onnx(tiny_backbone(width=4), tmp_path / "encoder.onnx")
    assert not list(tmp_path.iterdir())
    # Without the option nothing is asked of tf2onnx.
    DetectConfig(data="synthetic:60", out=str(tmp_path / "d")).validate()


def test_pretrain_export_onnx_option_writes_encoder_onnx(tmp_path):
    import keras
    from click.testing import CliRunner

    from ssl_keras.cli.main import main

    out = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        ["pretrain", "--data", "synthetic:16", "--out", str(out), "--epochs", "1"]
        + ["--backbone", "tiny", "--batch-size", "8", "--image-size", "32", "--warmup-epochs", "0"]
        + ["--no-export", "--export-onnx", "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["outputs"]["onnx"] == str(out / "encoder.onnx")
    assert record["outputs"]["savedmodel"] is None
    encoder = keras.saving.load_model(out / "encoder.keras")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    [served] = _run(out / "encoder.onnx", images).values()
    np.testing.assert_allclose(served, np.asarray(encoder(images, training=False)), atol=1e-4)


def test_a_failed_conversion_is_logged_and_the_encoder_kept(tmp_path, monkeypatch):
    import types

    from ssl_keras.pretraining import pretrain

    def fail(*args, **kwargs):
        raise RuntimeError("op Foo is not supported")

    monkeypatch.setattr(pretrain, "export_encoder_onnx", fail)
    logs = []
    model = types.SimpleNamespace(encoder=tiny_backbone(width=4))
    config = types.SimpleNamespace(export=False, export_onnx=True)
    paths = pretrain._save_encoder(model, str(tmp_path), config, logs.append)
    assert paths == (str(tmp_path / "encoder.keras"), None, None)
    assert (tmp_path / "encoder.keras").is_file()
    assert logs == [
        "ONNX export failed, encoder.keras is saved: RuntimeError: op Foo is not supported"
    ]
