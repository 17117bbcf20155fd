"""Run directories: refusal to overwrite, atomic file writes (JSON, text, PNG, models), environment records."""

import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile


class RunDirectoryError(RuntimeError):
    """The output directory cannot be used as asked (exists, or nothing to resume)."""


def prepare_run_directory(out, *, resume=False, command="pretrain"):
    """Creates `out`, refusing to reuse a non-empty directory unless resuming.

    Args:
        out: path of the run directory.
        resume: bool, continue the run stored in `out`.
        command: string, the command name used in messages.

    Returns:
        The absolute path of the run directory.
    """
    out = os.path.abspath(os.fspath(out))
    exists = os.path.isdir(out) and bool(os.listdir(out))
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunDirectoryError(f"--out {out} is a file, not a directory; choose another --out")
    if resume:
        if not os.path.isfile(os.path.join(out, "config.json")):
            raise RunDirectoryError(
                f"--resume: {out} holds no config.json, so there is no {command} run to continue; "
                "drop --resume to start a new run"
            )
    elif exists:
        raise RunDirectoryError(
            f"--out {out} exists and is not empty; pass --resume to continue the run in it, or "
            "choose a new --out (nothing there was changed)"
        )
    os.makedirs(out, exist_ok=True)
    return out


def write_json_atomic(path, payload):
    """Writes JSON through a temporary file and a rename, so a crash never leaves half a file."""
    text = json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_text_atomic(path, text)


def write_text_atomic(path, text):
    """Writes a text file through a temporary file and a rename, so a crash never leaves half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_file_atomic(path, write):
    """Calls `write(tmp)` on a temporary path beside `path`, then renames the result to `path`.

    `path` only ever appears complete: an existing file stays untouched until the new one is
    whole, and no temporary file is left behind, whether `write` succeeds or raises. The
    temporary name holds the process id, so two processes writing the same file never share
    one, and ends with `path`'s own name, so writers that pick the format from the extension
    (`model.save`, `figure.savefig`) still see it.

    Args:
        path: the file to write.
        write: function taking the temporary path (a string) and writing the whole file there.

    Returns:
        `path`.

    Example:

    >>> write_file_atomic("plot.png", lambda tmp: figure.savefig(tmp, format="png"))  # doctest: +SKIP
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_png_atomic(image, path):
    """Writes a `[H, W, 3]` uint8 array (or a PIL image) as a PNG, through `write_file_atomic`."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    return write_file_atomic(path, lambda tmp: image.save(tmp, format="PNG"))


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary file and a rename: a crash never leaves half a model.

    An existing file at `path` stays untouched until the new one is complete.
    """
    return write_file_atomic(path, model.save)


def replace_path_atomic(tmp_path, final_path):
    """Moves a finished file or directory into place; an older one is removed only afterwards."""
    if os.path.isdir(final_path) and not os.path.islink(final_path):
        old = final_path + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(final_path, old)
        os.replace(tmp_path, final_path)
        shutil.rmtree(old)
    else:
        os.replace(tmp_path, final_path)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _git_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        result = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def environment_info():
    """Library versions, backend, devices and the package's git commit, for the run record."""
    import keras
    import numpy

    import ssl_keras

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "ssl_keras": ssl_keras.__version__,
        "ssl_keras_git_commit": _git_commit(),
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "backend": keras.config.backend(),
        "devices": accelerator_devices() or ["cpu"],
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for module in ("tensorflow", "jax", "torch"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", None)
    return info


def accelerator_devices():
    """Names of the accelerators visible to the active Keras backend (empty on CPU)."""
    import keras

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def resolved_jit_compile():
    """XLA only with an accelerator: on CPU, TF graph mode is about 8x faster than XLA here."""
    return "auto" if accelerator_devices() else False
