"""Run files that a full disk, a killed run, a hand or a read-only folder damaged: one line, no loss.

`pretrain` end to end (tiny backbone, 16 small images): a full disk at the state write, a
resume after state.json is gone, a truncated config.json, read-only folders, file modes.
"""

import errno
import json
import os
import stat

import pytest
from cli_runs import (
    command_args,
    copy_photos,
    invoke_as_user,
    one_error_line,
    options,
    resume_args,
)

from ssl_keras.runs import run_directory
from test_case import TINY_ARGS

pytestmark = pytest.mark.large  # end-to-end runs

PRETRAIN = [*TINY_ARGS, *options(warmup_epochs=0, quiet=True, export=False, seed=3)]


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    return copy_photos(shared_data, tmp_path_factory.mktemp("photos"), 16)


def pretrain(photos, out, epochs):
    """`ssl-keras pretrain` of `epochs` on `photos` into `out`, exceptions caught as a user meets them."""
    return invoke_as_user(command_args("pretrain", photos, out, "--epochs", epochs, *PRETRAIN))


def resume(out, *more):
    """`ssl-keras pretrain --out OUT --resume MORE... --quiet`, exceptions caught."""
    return invoke_as_user(resume_args("pretrain", out, *more, quiet=True))


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def full_disk_at_second(name, monkeypatch):
    """The second write of a file called `name` fails half-way as a full disk does."""
    real = run_directory.write_text_atomic
    seen = []

    def write_text_atomic(path, text):
        if os.path.basename(path) == name:
            seen.append(path)
            if len(seen) == 2:

                def half_then_enospc(tmp):
                    with open(tmp, "w") as f:
                        f.write(text[: len(text) // 2])
                    raise OSError(errno.ENOSPC, "No space left on device")

                return run_directory.write_file_atomic(path, half_then_enospc)
        return real(path, text)

    monkeypatch.setattr(run_directory, "write_text_atomic", write_text_atomic)


def test_full_disk_at_the_state_write_then_resume_continues_from_that_checkpoint(
    photos, tmp_path, monkeypatch, umask_022
):
    out = tmp_path / "run"
    full_disk_at_second("state.json", monkeypatch)
    failed = pretrain(photos, out, 3)
    line = one_error_line(failed)
    state_path = out / "checkpoints" / "state.json"
    assert line.startswith(f"Error: cannot write {state_path}: No space left on device")
    assert (
        f"the last good checkpoint is {out / 'checkpoints' / 'epoch-0002.keras'} (epoch 2)" in line
    )
    assert line.endswith(f"resume with: ssl-keras pretrain --out {out} --resume")
    # state.json still names epoch 1 (its epoch-2 write failed); the checkpoints hold their state.
    assert json.loads(state_path.read_text())["checkpoint"] == "epoch-0001.keras"
    monkeypatch.undo()
    os.unlink(state_path)  # and even with state.json gone, resume does not start over
    resumed = resume(out)
    assert resumed.exit_code == 0, resumed.output
    assert (
        f"note: {state_path} is missing; the state stored in epoch-0002.keras is used"
        in resumed.output
    )
    assert "(epoch 2 of 3 epochs)" in resumed.output
    record = json.loads((out / "result.json").read_text())
    assert record["epochs"] == 3 and len(record["history"]["loss"]) == 1
    assert sorted(os.listdir(out / "checkpoints")) == [
        "epoch-0002.keras",
        "epoch-0003.keras",
        "state.json",
    ]
    # Item 12: the run's JSON files follow the umask (0644 here), as the .keras files do.
    for path in (out / "config.json", out / "result.json", state_path, out / "encoder.keras"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644, path


def test_a_truncated_config_json_or_checkpoint_on_resume_is_one_line(photos, tmp_path):
    out = tmp_path / "run"
    assert pretrain(photos, out, 2).exit_code == 0
    config = out / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    line = one_error_line(resume(out, "--epochs", "3"))
    assert line.startswith(f"Error: {config}: not valid JSON (") and "truncated" in line
    config.write_text(text)
    for name in ("epoch-0001.keras", "epoch-0002.keras"):
        path = out / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:100])
    line = one_error_line(resume(out, "--epochs", "3"))
    assert line.startswith(f"Error: no intact checkpoint to resume from in {out / 'checkpoints'}: ")
    assert "epoch-0002.keras: truncated" in line and "Nothing was changed" in line


def test_read_only_folders_are_one_line_naming_the_path(photos, tmp_path, read_only):
    parent = tmp_path / "shared"
    parent.mkdir()
    read_only(parent)
    out = parent / "run"
    line = one_error_line(pretrain(photos, out, 1))
    assert line.startswith(f"Error: cannot create --out {out}: ") and "not writable" in line
    assert not out.exists()

    run = tmp_path / "finished"
    assert pretrain(photos, run, 1).exit_code == 0
    before = sorted(os.listdir(run))
    read_only(run)
    line = one_error_line(resume(run, "--epochs", "2"))
    assert line.startswith(f"Error: cannot create the run's lock file {run / '.run.lock'}: ")
    assert "not writable" in line and sorted(os.listdir(run)) == before
