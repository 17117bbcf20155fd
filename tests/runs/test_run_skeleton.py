"""The steps every run shares (`runs/run_skeleton.py`), without training anything."""

import json

import keras
import pytest
from cli_runs import TinyConfig

from ssl_keras.runs.resumable import NonFiniteLossError, RunCheckpoint, TrainingInterrupted
from ssl_keras.runs.run_directory import RunDirectoryError
from ssl_keras.runs.run_skeleton import start_run


def seeds_of(seed):
    return {"global": seed, "data": seed + 2}


def write_checkpoint(folder, *, epoch, step):
    """A real checkpoint (a small model with its state record) and state.json, as training writes."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    checkpoint = RunCheckpoint(str(folder))
    checkpoint.set_model(model)
    return checkpoint.save(epoch, step)


def test_a_new_run_resolves_its_seeds_and_starts_at_zero(tmp_path):
    lines = []
    run = start_run(
        TinyConfig(str(tmp_path / "run")),
        command="detect",
        resolve_seeds=seeds_of,
        log=lines.append,
    )
    assert run.seeds == {"global": 7, "data": 9}
    assert run.state is None and run.start == (0, 0) and run.recorded is None
    assert run.log_resume(5) is False and lines == []
    run.write_config({"steps_per_epoch": 3})
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["command"] == "detect" and record["seeds"] == run.seeds
    assert record["options"] == {"out": str(tmp_path / "run"), "resume": False, "seed": 7}
    assert record["resolved"] == {"steps_per_epoch": 3} and "backend" in record["environment"]


def test_a_resumed_run_keeps_its_seeds_and_reads_its_checkpoint(tmp_path):
    out = tmp_path / "run"
    start_run(
        TinyConfig(str(out), seed=1), command="pretrain", resolve_seeds=seeds_of
    ).write_config({})
    write_checkpoint(out / "checkpoints", epoch=2, step=4)  # epoch-0002-step-000004.keras
    lines = []
    run = start_run(
        TinyConfig(str(out), resume=True, seed=99),
        command="pretrain",
        resolve_seeds=seeds_of,
        log=lines.append,
    )
    assert run.seeds == {"global": 1, "data": 3}  # --seed 99 does not change a resumed run
    assert run.recorded["seeds"] == run.seeds and run.start == (2, 4)
    assert run.log_resume(10) is True
    assert lines == [
        f"resuming from {out / 'checkpoints' / 'epoch-0002-step-000004.keras'} (epoch 2, step 4 "
        "of 10 epochs)"
    ]


def test_a_used_directory_is_refused_without_resume(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(RunDirectoryError, match="exists and is not empty"):
        start_run(TinyConfig(str(tmp_path / "run")), command="detect", resolve_seeds=seeds_of)


def test_hints_say_how_to_resume_or_what_to_change(tmp_path):
    run = start_run(TinyConfig(str(tmp_path / "run")), command="detect", resolve_seeds=seeds_of)
    with pytest.raises(TrainingInterrupted) as raised:
        with run.hints(nonfinite="lower it"):
            raise TrainingInterrupted("stopped", checkpoint="c.keras", epoch=1, step=2)
    assert str(raised.value) == f"stopped; resume with: ssl-keras detect --out {run.out} --resume"
    assert (raised.value.checkpoint, raised.value.epoch, raised.value.step) == ("c.keras", 1, 2)
    with pytest.raises(TrainingInterrupted, match="resume with: run it again$"):
        with run.hints(nonfinite="lower it", resume="run it again"):
            raise TrainingInterrupted("stopped", checkpoint="c.keras", epoch=1, step=2)
    with pytest.raises(NonFiniteLossError, match="^loss is nan; lower it$"):
        with run.hints(nonfinite="lower it"):
            raise NonFiniteLossError("loss is nan")
    with pytest.raises(ValueError, match="^other$"):  # anything else passes through unchanged
        with run.hints(nonfinite="lower it"):
            raise ValueError("other")


def test_write_timing_writes_timing_json(tmp_path):
    run = start_run(TinyConfig(str(tmp_path / "run")), command="detect", resolve_seeds=seeds_of)
    timing = run.write_timing()
    assert set(timing) == {"wall_seconds", "peak_memory_mb"}
    assert timing["wall_seconds"] >= 0 and timing["peak_memory_mb"] > 0
    assert json.loads((tmp_path / "run" / "timing.json").read_text()) == timing
