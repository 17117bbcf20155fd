"""`import ssl_keras` is light, and its classes are registered whenever Keras gets imported."""

import os
import subprocess
import sys
import textwrap

import pytest

import ssl_keras


def _fresh(script):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_ssl_keras_imports_neither_keras_nor_tensorflow():
    out = _fresh(
        """
        import sys
        import ssl_keras, ssl_keras.runs.config, ssl_keras.compare.compare_config
        print("HEAVY", sorted(m for m in ("keras", "tensorflow") if m in sys.modules))
        """
    )
    assert "HEAVY []" in out


@pytest.mark.parametrize(
    "first_import",
    [
        "import keras",
        # Keras is first imported half-way through a package module: the classes are registered
        # once that module has finished, not from inside it.
        "import ssl_keras.localization.detect",
    ],
)
def test_every_serializable_is_registered_whichever_module_imports_keras_first(first_import):
    out = _fresh(
        f"""
        import ssl_keras
        {first_import}
        import keras
        print("REGISTERED", sorted(k for k in keras.saving.get_custom_objects() if k.startswith("ssl_keras>")))
        """
    )
    registered = eval(out.split("REGISTERED ", 1)[1].splitlines()[0])
    import keras

    expected = sorted(k for k in keras.saving.get_custom_objects() if k.startswith("ssl_keras>"))
    assert len(expected) >= 10 and registered == expected
    assert ssl_keras.SERIALIZABLE_MODULES
