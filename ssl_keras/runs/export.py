"""SavedModel and ONNX export of inference endpoints (augmentation off, `training=False`).

`model.export()` of a model holding augmentation layers serves *with* augmentation, so the
endpoints here call the wrapped function explicitly in inference mode. Exporting needs the
TensorFlow backend (Keras's ExportArchive writes TF SavedModels).

ONNX files are converted from the SavedModel's `serve` signature with tf2onnx (the `onnx`
extra: `pip install 'ssl_keras[onnx]'`). Converting the saved signature, rather than a traced
function as `model.export(format="onnx")` does, keeps the tensors that layers capture as
constants (EfficientNet's input normalization) inside the file instead of turning them into
extra inputs that ONNX Runtime would ask for.
"""

import importlib.util
import os
import shutil
import tempfile

import keras

from ssl_keras.runs.run_directory import replace_path_atomic


class ExportError(RuntimeError):
    """The model cannot be exported in this environment."""


def export_serving(path, tracked, serve_fn, *, input_shape=(None, None, None, 3)):
    """Writes a SavedModel at `path` whose `serve` endpoint is `serve_fn`.

    The directory is written under a temporary name and moved into place when complete.

    Args:
        path: destination directory.
        tracked: the Keras layer or model whose variables the endpoint uses.
        serve_fn: function of a float32 image batch [N, H, W, 3] in [0, 255].
        input_shape: the endpoint's input shape. Defaults to any batch and image size.

    Returns:
        `path`.
    """
    if keras.config.backend() != "tensorflow":
        raise ExportError(
            f"SavedModel export needs the TensorFlow backend (active: {keras.config.backend()}); "
            "the .keras file was written and can be exported later with KERAS_BACKEND=tensorflow"
        )
    path = os.path.abspath(os.fspath(path))
    tmp = path + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    archive = keras.export.ExportArchive()
    archive.track(tracked)
    archive.add_endpoint(
        name="serve",
        fn=serve_fn,
        input_signature=[keras.InputSpec(shape=input_shape, dtype="float32")],
    )
    archive.write_out(tmp, verbose=False)
    replace_path_atomic(tmp, path)
    return path


def export_encoder(encoder, path):
    """Exports an encoder: `serve(images)` maps [N, H, W, 3] floats in [0, 255] to pooled features.

    Example:

    >>> export_encoder(model.encoder, "run/encoder_savedmodel")
    >>> serve = load_serving("run/encoder_savedmodel")
    >>> features = serve(images)
    """
    return export_serving(path, encoder, lambda images: encoder(images, training=False))


def load_serving(path):
    """Loads the `serve` endpoint of an exported SavedModel as a callable."""
    import tensorflow as tf

    # The endpoint refers to the loaded object's variables, so the closure keeps it alive.
    loaded = tf.saved_model.load(os.fspath(path))

    def serve(images):
        return loaded.serve(tf.convert_to_tensor(images, tf.float32))

    return serve


ONNX_PACKAGES = ("tf2onnx", "onnx")
"""What ONNX export needs beyond TensorFlow: tf2onnx, which brings onnx (the `onnx` extra)."""


def onnx_export_missing():
    """None when ONNX export can run here, else the one-line reason (what to install)."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"ONNX export needs {' and '.join(missing)}, which are not installed: "
        "pip install 'ssl_keras[onnx]'"
    )


def savedmodel_to_onnx(savedmodel, path):
    """Converts the `serve` endpoint of an exported SavedModel to an ONNX file at `path`.

    The file is written under a temporary name and moved into place when complete. Its input
    is the endpoint's image batch (float32 [N, H, W, 3], any batch and image size) and its
    outputs are the endpoint's, under the same names.

    Args:
        savedmodel: a directory written by `export_serving` (or `export_encoder`).
        path: the `.onnx` file to write.

    Returns:
        `path`.

    Raises:
        ExportError: tf2onnx or onnx is not installed.
    """
    missing = onnx_export_missing()
    if missing:
        raise ExportError(missing)
    import tf2onnx

    path = os.path.abspath(os.fspath(path))
    graph_def, inputs, outputs, renames = tf2onnx.tf_loader.from_saved_model(
        os.fspath(savedmodel),
        None,
        None,
        tag="serve",
        signatures=["serve"],
        return_tensors_to_rename=True,
    )
    tmp = path + ".partial"
    tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=inputs,
        output_names=outputs,
        tensors_to_rename=renames,
        output_path=tmp,
    )
    replace_path_atomic(tmp, path)
    return path


def export_onnx(path, tracked, serve_fn, *, savedmodel=None):
    """Writes an ONNX file at `path` of the same endpoint as `export_serving(..., serve_fn)`.

    Args:
        path: the `.onnx` file to write.
        tracked: the Keras layer or model whose variables the endpoint uses.
        serve_fn: function of a float32 image batch [N, H, W, 3] in [0, 255].
        savedmodel: None, or the SavedModel of this endpoint just written by `export_serving`,
            converted instead of writing a temporary one. Defaults to None.

    Returns:
        `path`.

    Example:

    >>> export_onnx("run/model.onnx", model, lambda images: model(images, training=False))
    >>> session = onnxruntime.InferenceSession("run/model.onnx")
    >>> outputs = session.run(None, {session.get_inputs()[0].name: images})
    """
    missing = onnx_export_missing()
    if missing:
        raise ExportError(missing)
    if savedmodel is not None:
        return savedmodel_to_onnx(savedmodel, path)
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    with tempfile.TemporaryDirectory(prefix=".onnx-savedmodel-", dir=folder) as tmp:
        export_serving(os.path.join(tmp, "savedmodel"), tracked, serve_fn)
        return savedmodel_to_onnx(os.path.join(tmp, "savedmodel"), path)


def export_encoder_onnx(encoder, path, *, savedmodel=None):
    """ONNX file of `export_encoder`'s endpoint: [N, H, W, 3] floats in [0, 255] to pooled features."""
    return export_onnx(
        path, encoder, lambda images: encoder(images, training=False), savedmodel=savedmodel
    )
