"""One `compare` or `experiment` at a time in its out folder: a second one is refused."""

import json

from cli_runs import invoke_as_user, one_error_line, options
from stand_ins import hold_lock

from ssl_keras.compare.compare import prepare_compare_directory
from ssl_keras.compare.compare_config import CompareConfig
from ssl_keras.experiment.experiment import load_experiment, prepare_experiment_directory
from ssl_keras.runs.run_directory import LOCK_FILE

GRID = dict(data="synthetic:40", backbones="scratch", backbone_name="tiny", seeds=1, epochs=1)
GRID.update(label_fractions="1.0", modes="freeze", image_size=32, batch_size=8)


def test_a_second_compare_on_one_out_names_the_holder_and_changes_nothing(tmp_path):
    out = tmp_path / "cmp"
    config = CompareConfig(**GRID, out=str(out)).validate()
    prepare_compare_directory(config, log=lambda line: None)  # a compare that has started
    before = sorted(p.name for p in out.iterdir())
    holder = hold_lock(out)
    try:
        line = one_error_line(invoke_as_user(["compare", *options(**GRID), "--out", out]))
        assert f"PID {holder.pid}" in line and str(out) in line
        assert sorted(p.name for p in out.iterdir()) == sorted([*before, LOCK_FILE])
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone, its stale lock is taken over and the grid runs.
    result = invoke_as_user(["compare", *options(**GRID, out=out, gradcam_images=0)])
    assert result.exit_code == 0, result.output
    assert not (out / LOCK_FILE).exists()  # released at the end
    assert json.loads((out / "compare.json").read_text())["command"] == "compare"


def test_a_second_experiment_on_one_out_is_refused(tmp_path):
    out = tmp_path / "exp"
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        f"name: two\nout: {out}\ncompare:\n  data: synthetic:40\n  backbones: scratch\n"
        "  backbone_name: tiny\n  label_fractions: '1.0'\n  modes: freeze\n  seeds: 1\n"
        "  epochs: 1\n  image_size: 32\n  batch_size: 8\n"
        "analysis:\n  reference: scratch\n  at: [1.0]\n  gradcam_images: 0\n",
        encoding="utf-8",
    )
    prepare_experiment_directory(load_experiment(spec), log=lambda line: None)  # it started
    holder = hold_lock(out)
    try:
        result = invoke_as_user(["experiment", spec])
        line = one_error_line(result)
        assert f"PID {holder.pid}" in line
        assert not (out / "compare").exists()
    finally:
        holder.kill()
        holder.wait()
