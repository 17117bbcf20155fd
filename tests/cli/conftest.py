"""Fixtures of the CLI tests."""

import os
import subprocess

import pytest


@pytest.fixture
def read_only():
    """Makes a folder read-only for this process: chmod 0o555, or, as root (who ignores modes),
    the immutable attribute."""
    made = []

    def make(folder):
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
                pytest.skip(
                    "running as root, and chattr +i is not available to make a folder read-only"
                )
        else:
            os.chmod(folder, 0o555)
        made.append(folder)
        return folder

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        else:
            os.chmod(folder, 0o755)
