"""SavedModel export of inference endpoints (augmentation off, `training=False`).

`model.export()` of a model holding augmentation layers serves *with* augmentation, so the
endpoints here call the wrapped function explicitly in inference mode. Exporting needs the
TensorFlow backend (Keras's ExportArchive writes TF SavedModels).
"""

import os
import shutil

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
