"""`import ssl_keras` on its own: it registers every serializable, and stays light."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from stand_ins import tiny_detect_run

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fresh_python(script, tmp_path):
    """Runs `script` in a new interpreter that finds this checkout's ssl_keras, from an unrelated folder."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.large
def test_import_ssl_keras_registers_every_serializable_without_heavy_imports(tmp_path):
    out = _fresh_python(
        """
        import sys
        import ssl_keras
        import keras
        print("FILE", ssl_keras.__file__)
        print("HEAVY", sorted(m for m in ("tensorflow_datasets", "keras_cv", "click") if m in sys.modules))
        print("REGISTERED", sorted(keras.saving.get_custom_objects()))
        """,
        tmp_path,
    )
    lines = dict(
        line.split(" ", 1)
        for line in out.splitlines()
        if line.split(" ", 1)[0] in ("FILE", "HEAVY", "REGISTERED")
    )
    assert pathlib.Path(lines["FILE"]).resolve() == REPO / "ssl_keras" / "__init__.py"
    assert lines["HEAVY"] == "[]"
    # Every class the package registers, read from the source: a new one in a module that
    # `ssl_keras/__init__.py` does not import fails here.
    registered = set()
    for path in (REPO / "ssl_keras").rglob("*.py"):
        lines_of = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines_of):
            if line.startswith('@keras.saving.register_keras_serializable(package="ssl_keras")'):
                name = (
                    next(l for l in lines_of[i + 1 :] if l.startswith("class "))[6:]
                    .split("(")[0]
                    .split(":")[0]
                )
                registered.add(f"ssl_keras>{name}")
    assert registered and registered <= set(eval(lines["REGISTERED"]))


@pytest.mark.large
def test_a_detect_run_loads_in_a_fresh_process_after_import_ssl_keras(tmp_path):
    from ssl_keras.localization.detect import load_run

    run = tmp_path / "run"
    tiny_detect_run(run, head="spatial")
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "images.npy", images)
    _fresh_python(
        f"""
        import numpy as np
        import ssl_keras
        import keras
        model = keras.saving.load_model({str(run / "model.keras")!r})
        out = model.predict(np.load("images.npy"), verbose=0)
        np.savez("outputs.npz", boxes=out["boxes"], class_logits=out["class_logits"])
        """,
        tmp_path,
    )
    fresh = np.load(tmp_path / "outputs.npz")
    model, _ = load_run(str(run))
    expected = model.predict(images, verbose=0)
    for key in ("boxes", "class_logits"):
        np.testing.assert_allclose(fresh[key], expected[key], rtol=1e-5, atol=1e-6)
