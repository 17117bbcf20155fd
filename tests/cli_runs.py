"""What the end-to-end tests of the `ssl-keras` commands share; no tests of its own.

Folders of real photos, argument lists built from keywords, a command run in this process (click's
`CliRunner`) or as a real process, the checks its results get, and the smallest stand-in for a
command's config. Import it as `from cli_runs import ...`: pytest puts `tests/` on the path
(see conftest.py).
"""

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import time

import keras
import numpy as np
from click.testing import CliRunner

from ssl_keras.cli.main import main

TWO_CPUS = str(pathlib.Path(__file__).resolve().parent / "two_cpus.py")
"""The launcher that runs `ssl-keras` on 2 logical CPU devices (see `tests/two_cpus.py`)."""


def options(**values):
    """`ssl-keras` options from keywords, in their order.

    `epochs=2` gives `--epochs 2` (underscores become hyphens), `quiet=True` gives `--quiet`,
    `export=False` gives `--no-export`, and a None value is left out.

    Args:
        **values: option names (without `--`) and their values.

    Returns:
        The options as a list of strings.

    Example:

    >>> options(epochs=1, steps_per_epoch=6, quiet=True, export=False, seed=None)
    ['--epochs', '1', '--steps-per-epoch', '6', '--quiet', '--no-export']
    """
    args = []
    for name, value in values.items():
        flag = name.replace("_", "-")
        if value is True:
            args.append(f"--{flag}")
        elif value is False:
            args.append(f"--no-{flag}")
        elif value is not None:
            args += [f"--{flag}", str(value)]
    return args


def command_args(command, data, out, *more, **values):
    """The arguments of `ssl-keras COMMAND --data DATA --out OUT MORE... OPTIONS...`.

    Args:
        command: str, e.g. `"pretrain"` or `"detect"`.
        data: the `--data` value (a folder, or a spec such as `"synthetic:64"`).
        out: the `--out` run directory.
        *more: further arguments as they are, e.g. a shared list of tiny options.
        **values: further options, as `options` writes them.

    Returns:
        The arguments as a list of strings.
    """
    return [command, "--data", str(data), "--out", str(out), *map(str, more), *options(**values)]


def resume_args(command, out, *more, **values):
    """The arguments of `ssl-keras COMMAND --out OUT --resume MORE... OPTIONS...`."""
    return [command, "--out", str(out), "--resume", *map(str, more), *options(**values)]


def invoke(args):
    """Runs `ssl-keras ARGS` in this process; an exception is raised with its own traceback.

    Args:
        args: the arguments (anything `str` gives the text of, such as paths).

    Returns:
        click's `Result`.
    """
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def invoke_as_user(args):
    """Runs `ssl-keras ARGS` in this process with exceptions caught, as a user would meet them.

    A crash then exits with 1 and its traceback shows in `result.output`, which the tests of
    user mistakes check for.
    """
    return CliRunner().invoke(main, [str(arg) for arg in args])


def one_error_line(result):
    """The `Error: ...` line of a failed command, checking it is the only sign of failure."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not a crash
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def start_cli(args, *, launcher=None):
    """Starts `ssl-keras ARGS` as a real process, with its stdout and stderr piped as text.

    Args:
        args: the arguments (anything `str` gives the text of).
        launcher: a script that runs the CLI (e.g. `TWO_CPUS`), or None for
            `python -m ssl_keras.cli.main`. Defaults to None.

    Returns:
        The `subprocess.Popen`.
    """
    program = [launcher] if launcher else ["-m", "ssl_keras.cli.main"]
    return subprocess.Popen(
        [sys.executable, *program, *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, *, timeout=600):
    """Waits for a `start_cli` process; returns its exit code and its stdout then stderr."""
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout + stderr


def run_cli_process(args, *, launcher=None, timeout=600):
    """Runs `ssl-keras ARGS` as a real process to its end (see `start_cli` and `finish`)."""
    return finish(start_cli(args, launcher=launcher), timeout=timeout)


def wait_while_running(process, ready, *, timeout=300):
    """Polls `ready()` every 20 ms until it is true, `process` has ended or `timeout` s passed.

    Returns:
        Whether `process` is still running.
    """
    deadline = time.time() + timeout
    while not ready() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    return process.poll() is None


def copy_photos(shared_data, folder, count, *, link=False):
    """Fills `folder` with the first `count` JPEG photos (by name) of `shared_data/unlabeled`.

    Args:
        shared_data: the shared data folder (the `shared_data` fixture).
        folder: pathlib.Path, made if missing.
        count: int, how many photos.
        link: bool, symbolic links instead of copies. Defaults to False.

    Returns:
        `folder`.
    """
    source = shared_data / "unlabeled"
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(n for n in os.listdir(source) if n.endswith(".jpg"))[:count]:
        if link:
            os.symlink(source / name, folder / name)
        else:
            shutil.copy(source / name, folder / name)
    return folder


def model_weights(path):
    """The weights of the `.keras` model at `path`, as NumPy arrays."""
    return keras.saving.load_model(path).get_weights()


def max_difference(a, b):
    """The largest absolute difference between two lists of arrays of the same shapes."""
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


@dataclasses.dataclass
class TinyConfig:
    """The fewest fields a command's config has for `runs.run_skeleton.start_run`."""

    out: str
    resume: bool = False
    seed: int = 7
