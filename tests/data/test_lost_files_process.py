"""A real `pretrain` process whose images are deleted mid-run ends with an error naming them.

Before, `ignore_errors()` on the endless epoch stream yielded nothing for ever: the process
spun at 100% CPU, deaf to SIGINT and SIGTERM.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.large  # a real pretrain process

DEADLINE_S = 240


@pytest.fixture
def photos(shared_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = sorted(n for n in os.listdir(shared_data / "unlabeled") if n.endswith(".jpg"))[:16]
    for name in names:
        shutil.copy(shared_data / "unlabeled" / name, folder / name)
    return folder


def test_deleting_the_images_mid_run_ends_the_run_with_an_error_naming_them(photos, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--data", str(photos), "--out", str(out), "--backbone", "tiny"]
    args += ["--batch-size", "8", "--image-size", "32", "--warmup-epochs", "0", "--quiet"]
    args += ["--no-export", "--epochs", "5000", "--seed", "3"]
    process = subprocess.Popen(
        [sys.executable, "-m", "ssl_keras.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = out / "checkpoints" / "state.json"
        deadline = time.time() + DEADLINE_S
        while not state.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()
        names = sorted(os.listdir(photos))
        shutil.rmtree(photos)  # As an unmounted drive: the files are gone mid-run.
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode not in (0, None)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: image files lost during training:"), stderr[-2000:]
    assert "could not be read" in last and any(name in last for name in names), last
    assert "Traceback" not in stderr
    assert (out / "checkpoints" / "state.json").exists()  # The last epoch's checkpoint stays.
