"""The real `ssl-keras` console script: a fast `--help`, and no TensorFlow start-up noise.

Help, `--version` and option errors must not import TensorFlow (they answer in well under a
second); a command that does import it must not show TensorFlow's C++ start-up lines, unless
`ssl-keras --verbose`.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from ssl_keras.quiet_startup import QUIET_ENV, is_startup_line

SCRIPT = pathlib.Path(sys.executable).parent / "ssl-keras"
REPO = pathlib.Path(__file__).resolve().parents[2]


def _python(script, **env):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **env),
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["pretrain", "--help"],
        ["detect", "--help"],
        ["compare", "--help"],
        ["probe", "--help"],
        ["pretrain", "--no-such-option"],
        ["detect", "--epochs", "ten"],
        ["no-such-command"],
        # Parsing and checking an experiment file (72 cells) needs no stage either.
        ["experiment", str(REPO / "experiments" / "paper_cpu.yaml"), "--check"],
    ],
)
def test_help_version_and_option_errors_do_not_import_tensorflow(args):
    result = _python(
        f"""
        import sys
        import click
        from ssl_keras.cli.main import main
        try:
            main({args!r}, prog_name="ssl-keras", standalone_mode=False)
        except click.exceptions.ClickException as error:
            error.show()
        except SystemExit:
            pass
        heavy = sorted(m for m in ("tensorflow", "keras", "tensorflow_datasets") if m in sys.modules)
        print("HEAVY", heavy)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout[-2000:]


def _run_script(*args, **env):
    if not SCRIPT.exists():
        pytest.skip(f"no console script {SCRIPT} (package not installed in this environment)")
    unset = ("TF_CPP_MIN_LOG_LEVEL", QUIET_ENV)
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict({k: v for k, v in os.environ.items() if k not in unset}, **env),
    )


def test_a_command_shows_no_tensorflow_startup_lines_unless_verbose(tmp_path):
    # `evaluate` of a missing run imports TensorFlow, then stops with a one-line error.
    args = ["evaluate", "--model", str(tmp_path / "missing")]
    # --verbose wins over a quiet environment inherited from a parent ssl-keras.
    verbose = _run_script("--verbose", *args, **{QUIET_ENV: "1"})
    quiet = _run_script(*args)
    for result in (verbose, quiet):
        assert result.returncode != 0 and "Error:" in result.stderr, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
    assert [line for line in quiet.stderr.splitlines() if is_startup_line(line)] == []
    assert "absl::InitializeLog" not in quiet.stderr and "cuInit" not in quiet.stderr
    if not any(is_startup_line(line) for line in verbose.stderr.splitlines()):
        pytest.skip("TensorFlow prints no start-up lines on this machine, even with --verbose")


def test_a_worker_process_filters_the_startup_lines_too():
    # A `spawn` worker of ssl_keras.runs.parallel_runs imports ssl_keras, then TensorFlow, with
    # the CLI's environment: the same as this process.
    script = """
        import sys
        import ssl_keras
        import tensorflow
        tensorflow.constant(1.0)
        print("python warning", file=sys.stderr)
        """
    quiet = _python(script, **{QUIET_ENV: "1"})
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert [line for line in quiet.stderr.splitlines() if is_startup_line(line)] == []
    assert "python warning" in quiet.stderr
