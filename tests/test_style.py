"""The repository is formatted by one formatter, `ruff format` at 100 columns (issue 13).

`pyproject.toml` configures it; `ruff check` runs the pyflakes rules. Both run from the `dev`
extra's ruff, so CI checks the formatting that `make format` applies.
"""

import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _ruff(*arguments):
    pytest.importorskip("ruff", reason="ruff comes with the dev extra: pip install -e '.[dev]'")
    return subprocess.run(
        [sys.executable, "-m", "ruff", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_file_is_formatted():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, "run `make format`:\n" + result.stdout + result.stderr


def test_no_pyflakes_findings():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_formatter_is_configured_once_at_100_columns():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert "line-length = 100" in text
    assert not (REPO / ".ruff.toml").exists() and not (REPO / "ruff.toml").exists()
