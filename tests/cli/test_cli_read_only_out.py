"""Every command that writes a folder says in one line that --out cannot be created."""

import pytest
from cli_runs import invoke_as_user, one_error_line
from stand_ins import tiny_detect_run


@pytest.fixture(scope="module")
def detect_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "run"
    tiny_detect_run(out)
    return out


@pytest.fixture
def locked_parent(tmp_path, read_only):
    parent = tmp_path / "shared"
    parent.mkdir()
    return read_only(parent)


def _scene(folder):
    from PIL import Image

    path = folder / "scene.png"
    Image.new("RGB", (40, 30), (120, 80, 40)).save(path)
    return path


@pytest.mark.parametrize("command", ["predict", "gradcam"])
def test_commands_on_images(command, detect_run, locked_parent):
    out = locked_parent / "out"
    args = [command, "--model", detect_run, _scene(detect_run.parent), "--out", out]
    line = one_error_line(invoke_as_user(args))
    assert line.startswith(f"Error: cannot create --out {out}: ") and "not writable" in line
    assert not out.exists()


def test_compare(locked_parent):
    out = locked_parent / "cmp"
    args = ["compare", "--data", "synthetic:40", "--backbones", "scratch", "--backbone-name"]
    args += ["tiny", "--label-fractions", "1.0", "--modes", "freeze", "--seeds", "1", "--out", out]
    line = one_error_line(invoke_as_user(args))
    assert line.startswith(f"Error: cannot create --out {out}: ") and "not writable" in line


def test_demo(locked_parent):
    out = locked_parent / "demo"
    line = one_error_line(invoke_as_user(["demo", "--out", out]))
    assert line.startswith(f"Error: cannot create --out {out}: ") and "not writable" in line


def test_experiment(locked_parent, tmp_path):
    out = locked_parent / "exp"
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        f"name: ro\nout: {out}\ncompare:\n  data: synthetic:40\n  backbones: scratch\n"
        "  backbone_name: tiny\n  label_fractions: '1.0'\n  modes: freeze\n  seeds: 1\nanalysis:\n  reference: scratch\n  at: [1.0]\n",
        encoding="utf-8",
    )
    line = one_error_line(invoke_as_user(["experiment", spec]))
    assert line.startswith(f"Error: cannot create the experiment's out {out}: ")
    assert "not writable" in line
