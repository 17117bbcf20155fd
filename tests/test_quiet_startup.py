"""`ssl_keras.quiet_startup`: TensorFlow's start-up lines are dropped, every other line is kept."""

import os
import sys
import warnings

from ssl_keras.quiet_startup import filtered_stderr, is_startup_line

STARTUP = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796158699.760321    6713 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results.",
    "I0000 00:00:1796158699.760667    6713 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796158804.046898    8442 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]
REAL = [
    "E0000 00:00:1796158804.046898    8442 some_kernel.cc:52] OOM when allocating tensor",
    "W0000 00:00:1796158804.046898    8442 loader.cc:10] a real warning",
    "UserWarning: something that matters",
    "Error: --epochs must be an integer >= 1; got 0",
]


def test_only_the_known_startup_lines_match():
    assert all(is_startup_line(line) for line in STARTUP)
    assert not any(is_startup_line(line) for line in REAL)


def test_filtered_stderr_drops_startup_lines_and_keeps_the_rest(capfd):
    with filtered_stderr():
        for line in STARTUP + REAL[:2]:
            os.write(2, (line + "\n").encode())
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            print("UserWarning: something that matters", file=sys.__stderr__, flush=True)
    os.write(2, b"after the block\n")
    err = capfd.readouterr().err
    assert not any(is_startup_line(line) for line in err.splitlines())
    for line in REAL[:3]:
        assert line in err
    assert err.rstrip().endswith("after the block")
