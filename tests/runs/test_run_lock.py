"""One run at a time in a run directory (`RunLock`, `open_run_directory`, `start_run`).

The holders here are real processes: a small Python process that takes the lock with
`run_directory.py` alone (loaded without the package, so without TensorFlow: it starts in a
fraction of a second), and in `test_two_pretrain_processes_on_one_out...`, two `ssl-keras
pretrain` processes started at once.
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from cli_runs import TinyConfig, command_args, copy_photos, options, start_cli
from stand_ins import hold_lock

from ssl_keras.runs import run_directory
from ssl_keras.runs.run_directory import (
    LOCK_FILE,
    RunDirectoryError,
    RunLock,
    RunLockedError,
    open_run_directory,
)
from ssl_keras.runs.run_skeleton import start_run
from test_case import TINY_ARGS


def seeds_of(seed):
    return {"global": seed}


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_is_refused_with_the_pid_that_holds_the_directory(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    try:
        with pytest.raises(RunLockedError) as refused:
            start_run(TinyConfig(str(out)), command="pretrain", resolve_seeds=seeds_of)
        message = str(refused.value)
        assert f"PID {holder.pid}" in message and str(out) in message and "\n" not in message
        assert "ssl-keras pretrain run" in message
        # The same with --resume, and nothing was written beside the holder's lock.
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            start_run(TinyConfig(str(out), resume=True), command="pretrain", resolve_seeds=seeds_of)
        assert os.listdir(out) == [LOCK_FILE]
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.large
def test_the_lock_of_a_killed_process_is_taken_over_and_said(tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out)
    holder.send_signal(signal.SIGKILL)  # leaves its lock file behind
    holder.wait()
    assert (out / LOCK_FILE).exists()
    lines = []
    with start_run(
        TinyConfig(str(out)), command="pretrain", resolve_seeds=seeds_of, log=lines.append
    ):
        assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert len(lines) == 1 and f"locked by PID {holder.pid}" in lines[0], lines
    assert "no longer running" in lines[0] and "took the lock over" in lines[0]
    assert not (out / LOCK_FILE).exists()  # released at the end of the run


def test_a_hand_written_lock_with_a_dead_pid_is_stale(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "command": "detect"}))
    lines = []
    run = start_run(
        TinyConfig(str(out)), command="detect", resolve_seeds=seeds_of, log=lines.append
    )
    run.write_config({})
    run.close()
    assert lines == [
        f"note: {out} was locked by PID {pid} (detect), which is no longer running (killed?); "
        "took the lock over"
    ]
    assert sorted(os.listdir(out)) == ["config.json"]


def test_the_lock_is_released_on_errors_and_interruptions(tmp_path):
    out = tmp_path / "run"
    for error in (KeyboardInterrupt, ValueError):
        with pytest.raises(error):
            with start_run(
                TinyConfig(str(out), resume=out.exists()),
                command="pretrain",
                resolve_seeds=seeds_of,
            ) as run:
                run.write_config({})
                raise error()
        assert not (out / LOCK_FILE).exists()
    # A start that fails after taking the lock (here: config.json damaged) releases it too.
    (out / "config.json").write_text('{"seeds": {"glo')
    with pytest.raises(RunDirectoryError, match="config.json: not valid JSON"):
        start_run(TinyConfig(str(out), resume=True), command="pretrain", resolve_seeds=seeds_of)
    assert os.listdir(out) == ["config.json"]
    RunLock(str(out), command="pretrain").release()  # nobody holds it


def test_a_dropped_run_releases_its_lock_and_a_held_one_is_refused_in_process(tmp_path):
    out = tmp_path / "run"
    first = open_run_directory(out, command="pretrain")
    with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
        open_run_directory(out, command="pretrain")
    del first  # garbage-collected without release(): the finalizer releases it
    second = open_run_directory(out, command="pretrain")
    assert second.held
    second.release()
    second.release()  # a second release does nothing
    assert not second.held and os.listdir(out) == []


def test_a_new_run_in_a_used_directory_is_refused_before_any_lock(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(RunDirectoryError, match="exists and is not empty"):
        open_run_directory(out, command="pretrain")
    assert os.listdir(out) == ["mine.txt"]


def pretrain_process(photos, out, seed):
    one_epoch = options(epochs=1, warmup_epochs=0, quiet=True, export=False, seed=seed)
    return start_cli(command_args("pretrain", photos, out, *TINY_ARGS, *one_epoch))


@pytest.mark.large
def test_two_pretrain_processes_on_one_out_one_is_refused_and_the_run_is_whole(
    shared_data, tmp_path
):
    photos = copy_photos(shared_data, tmp_path / "photos", 16, link=True)
    out = tmp_path / "run"
    processes = {seed: pretrain_process(photos, out, seed) for seed in (1, 2)}
    outputs = {seed: p.communicate(timeout=600) for seed, p in processes.items()}
    codes = {seed: p.returncode for seed, p in processes.items()}
    assert sorted(codes.values()) == [0, 1], (codes, outputs)
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = 3 - winner
    stderr = outputs[loser][1]
    refusal = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(refusal) == 1 and "Traceback" not in stderr, stderr
    assert f"is in use by another ssl-keras pretrain run, PID {processes[winner].pid}" in refusal[0]
    # Everything in the directory is the winner's, complete, and no temporary file is left.
    config = json.loads((out / "config.json").read_text())
    result = json.loads((out / "result.json").read_text())
    assert config["options"]["seed"] == winner
    state = json.loads((out / "checkpoints" / "state.json").read_text())
    assert result["epochs"] == state["epoch"] == 1 and result["loss"] == state["logs"]["loss"]
    assert (out / "encoder.keras").is_file()
    leftovers = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(out)
        for name in names
        if name.startswith(".tmp-") or name == LOCK_FILE
    ]
    assert leftovers == []


def test_temporary_names_are_unique_per_call(tmp_path):
    names = {
        os.path.basename(run_directory.temporary_name(str(tmp_path / "a.json"))) for _ in range(50)
    }
    assert len(names) == 50
    assert all(re.fullmatch(rf"\.tmp-{os.getpid()}-[0-9a-f]{{8}}-a\.json", name) for name in names)


def test_after_a_killed_run_its_temporary_files_go_and_others_stay(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    pid = dead_pid()
    (out / LOCK_FILE).write_text(json.dumps({"pid": pid, "command": "pretrain"}))
    (out / "config.json").write_text(json.dumps({"seeds": {"global": 1}}))
    stale = [
        out / f".tmp-{pid}-0123abcd-result.json",
        out / "checkpoints" / f".tmp-{pid}-deadbeef-epoch-0002.keras",
    ]
    kept = [
        out / ".tmp-1-0123abcd-result.json",  # PID 1 is alive: not ours to remove
        out / "checkpoints" / "epoch-0001.keras.bak",
    ]
    for path in stale + kept:
        path.write_text("half")
    lines = []
    with start_run(
        TinyConfig(str(out), resume=True),
        command="pretrain",
        resolve_seeds=seeds_of,
        log=lines.append,
    ):
        pass
    assert [path.exists() for path in stale + kept] == [False, False, True, True]
    assert lines[1:] == [
        f"removed 1 temporary file(s) a killed run left in {out}: {stale[0].name}",
        f"removed 1 temporary file(s) a killed run left in {out / 'checkpoints'}: {stale[1].name}",
    ]
