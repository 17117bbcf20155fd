"""The steps every training run shares, written once: `start_run` and the `Run` it returns.

A command runner (`run_pretrain`, `run_detect`) reads as its own steps between these:

```python
with start_run(config, command="detect", resolve_seeds=resolve_seeds, log=log) as run:
    return _detect(run, config)             # the steps below, in a function of their own

# in _detect(run, config):
...                                         # open the data, resolve the options
run.write_config(resolved)                  # config.json: command, options, seeds, resolved, environment
model = load_checkpoint(run.state) if run.log_resume(config.epochs) else build(...)
with run.hints(nonfinite="start a new run with a lower --learning-rate (...)"):
    fit_resumable(model, ..., checkpoints=run.checkpoints, start=run.start)
...                                         # save the outputs, compute the result
result.update(run.timing())                 # or run.write_timing(), which also writes timing.json
```

`start_run` does what must happen first, in this order: it takes the run directory's lock
(a second run on the same `--out` is refused with the PID that holds it) and prepares the
directory (refusing to reuse a non-empty one unless resuming), takes the seeds (those recorded
in config.json when resuming, whatever --seed says now, else `resolve_seeds(config.seed)`),
seeds Keras and finds the resume point, the newest intact checkpoint. The rest are methods the
runner calls at its own point, so the order of its messages and files is its own.

The `with` releases the lock however the run ends (returns, raises, is interrupted); `close()`
does the same without it. The steps sit in a function of their own so that they read
unindented.
"""

import contextlib
import os
import resource
import time

import keras

from ssl_keras.runs.config import to_dict
from ssl_keras.runs.resumable import NonFiniteLossError, TrainingInterrupted, checkpoint_state
from ssl_keras.runs.run_directory import (
    RunFileError,
    RunWriteError,
    environment_info,
    open_run_directory,
    read_json,
    remove_stale_temporaries,
    write_json_atomic,
)


class Run:
    """A started run: its directory, seeds and resume point (see `start_run`).

    Attributes:
        config: the command's config dataclass.
        command: str, the command name (`"pretrain"`, `"detect"`), in config.json and messages.
        out: str, the absolute run directory.
        config_path: str, `out/config.json`.
        recorded: dict or None, config.json as the resumed run left it (None for a new run).
        seeds: dict, the seed of every random source (`"global"` seeds Keras).
        checkpoints: str, `out/checkpoints`.
        state: dict or None, the newest intact checkpoint's state (`checkpoint_state`).
        start: `(epoch, step)` to continue from; `(0, 0)` for a new run.
        lock: the `RunLock` held on `out` until `close()`.
    """

    def __init__(self, config, *, command, resolve_seeds, log=print):
        self.started = time.perf_counter()
        self.config, self.command, self.log = config, command, log
        self.lock = open_run_directory(config.out, resume=config.resume, command=command)
        try:
            self.out = self.lock.directory
            if self.lock.takeover_note():
                log(self.lock.takeover_note())
                self._remove_stale_temporaries()
            self.config_path = os.path.join(self.out, "config.json")
            self.recorded = _recorded_config(self.config_path) if config.resume else None
            # A resumed run keeps the seeds it started with (config.json), whatever --seed says now.
            self.seeds = self.recorded["seeds"] if config.resume else resolve_seeds(config.seed)
            keras.utils.set_random_seed(self.seeds["global"])
            self.checkpoints = os.path.join(self.out, "checkpoints")
            self.state = checkpoint_state(self.checkpoints, log=log) if config.resume else None
            self.start = (self.state["epoch"], self.state["step"]) if self.state else (0, 0)
        except BaseException:
            self.close()
            raise

    def _remove_stale_temporaries(self):
        """After a killed run: its half-written temporary files go (the files they were for stay)."""
        for folder in (self.out, os.path.join(self.out, "checkpoints")):
            removed = remove_stale_temporaries(folder)
            if removed:
                self.log(
                    f"removed {len(removed)} temporary file(s) a killed run left in {folder}: "
                    + ", ".join(removed)
                )

    def close(self):
        """Releases the run directory's lock (a second call does nothing)."""
        self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def write_config(self, resolved):
        """Writes config.json: the command, its options, the seeds, `resolved` and the environment."""
        write_json_atomic(
            self.config_path,
            {
                "command": self.command,
                "options": to_dict(self.config),
                "seeds": self.seeds,
                "resolved": resolved,
                "environment": environment_info(),
            },
        )

    def log_resume(self, epochs):
        """Logs where a resumed run continues from; returns whether it resumes from a checkpoint."""
        state = self.state
        if state:
            self.log(
                f"resuming from {state['path']} (epoch {state['epoch']}"
                + (f", step {state['step']}" if state["step"] else "")
                + f" of {epochs} epochs)"
            )
        return bool(state)

    @contextlib.contextmanager
    def hints(self, *, nonfinite, resume=None):
        """Re-raises an interrupted or NaN fit with what to do next appended to its message.

        Args:
            nonfinite: str, the advice appended to a `NonFiniteLossError`.
            resume: str, how to continue after a `TrainingInterrupted`. Defaults to the
                `ssl-keras COMMAND --out OUT --resume` command.
        """
        resume = resume or f"ssl-keras {self.command} --out {self.out} --resume"
        try:
            yield
        except RunWriteError as error:  # a checkpoint could not be written: the last good one stays
            raise RunWriteError(
                f"{error}; resume with: {resume}", errno=error.errno, path=error.path
            ) from None
        except TrainingInterrupted as error:
            raise TrainingInterrupted(
                f"{error}; resume with: {resume}",
                checkpoint=error.checkpoint,
                epoch=error.epoch,
                step=error.step,
            ) from None
        except NonFiniteLossError as error:
            raise NonFiniteLossError(f"{error}; {nonfinite}") from None

    def timing(self):
        """`{"wall_seconds", "peak_memory_mb"}` of this process since the run started."""
        return {
            "wall_seconds": time.perf_counter() - self.started,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        }

    def write_timing(self):
        """Writes `timing()` to timing.json, apart from results that two runs may compare bitwise."""
        timing = self.timing()
        write_json_atomic(os.path.join(self.out, "timing.json"), timing)
        return timing


def _recorded_config(path):
    """config.json of the run being resumed; a damaged one is one line naming it."""
    recorded = read_json(path)
    if (
        not isinstance(recorded, dict)
        or not isinstance(recorded.get("seeds"), dict)
        or ("global" not in recorded["seeds"])
    ):
        raise RunFileError(
            f"{path}: holds no seeds record, so the run cannot be resumed as it started; "
            "was it edited? Start a new run with another --out"
        )
    return recorded


def start_run(config, *, command, resolve_seeds, log=print):
    """Starts (or resumes) a run: directory locked, seeds, Keras seeded, resume point read.

    Use it as `with start_run(...) as run:`, or call `run.close()`, so that the run
    directory's lock is released however the run ends.

    Args:
        config: the command's validated config dataclass; `out`, `resume` and `seed` are read.
        command: str, the command name, in config.json and in messages.
        resolve_seeds: function `seed -> {"global": ..., ...}`, the command's seeds for a new run.
        log: function receiving one-line messages. Defaults to `print`.

    Returns:
        The `Run`.

    Raises:
        RunLockedError: another process runs in `config.out` (the message names its PID).
        RunDirectoryError: `config.out` cannot be used as asked (see `open_run_directory`),
            or its config.json or checkpoints cannot be resumed from (`CheckpointError`).
    """
    return Run(config, command=command, resolve_seeds=resolve_seeds, log=log)
