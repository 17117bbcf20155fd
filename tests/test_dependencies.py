"""setup.py declares what the code imports, and nothing else (issue 14), read from the source.

- Every `install_requires` entry is imported by the package (`ssl_keras/` or `cli/`), unless
  `NOT_IMPORTED` says why it is needed all the same.
- Every extra's entry is imported where it is used: by the package or by the tests (a
  `pytest.importorskip` counts).
- Every third-party module the package imports is declared, in `install_requires` or an extra.
"""

import ast
import pathlib
import re
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("ssl_keras", "cli")

MODULES = {
    "tensorflow": "tensorflow",
    "keras": "keras",
    "numpy": "numpy",
    "tensorflow-datasets": "tensorflow_datasets",
    "importlib_resources": "importlib_resources",
    "tensorboard": "tensorboard",
    "click": "click",
    "pillow": "PIL",
    "matplotlib": "matplotlib",
    "pyyaml": "yaml",
    "pytest": "pytest",
    "ruff": "ruff",
    "jax": "jax",
    "torch": "torch",
    "keras-cv": "keras_cv",
    "tf2onnx": "tf2onnx",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}
"""`{distribution name: the module it installs}` for every requirement of setup.py."""

NOT_IMPORTED = {
    "importlib_resources": "tensorflow-datasets imports it but does not declare it",
}
"""`{distribution name: why}` of the requirements that no file of ours imports."""


def _setup_arguments():
    """`(install_requires, extras_require)` of setup.py, read as literals without running it."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup"
    )
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    return (
        ast.literal_eval(keywords["install_requires"]),
        ast.literal_eval(keywords.get("extras_require", ast.Dict([], []))),
    )


def _name(requirement):
    """The distribution name of a requirement string: `"keras-cv>=0.9"` gives `"keras-cv"`."""
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()


def _imported(folders):
    """`{top-level module: first file}` of every module imported in `folders`.

    Function-level imports count (most heavy or optional imports are lazy), and so does
    `pytest.importorskip("name")`.
    """
    found = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module]
                elif (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", None) == "importorskip"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    names = [node.args[0].value]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], path.relative_to(REPO).as_posix())
    return found


def test_the_setup_arguments_are_read():
    # An empty parse would pass every test below for the wrong reason.
    install_requires, extras = _setup_arguments()
    assert "keras" in {_name(r) for r in install_requires}
    assert "pytest" in {_name(r) for r in extras["dev"]}
    imported = _imported(PACKAGE_FOLDERS)
    assert imported["yaml"] == "ssl_keras/runs/config.py" and "click" in imported
    assert "ruff" in _imported(["tests"])  # through pytest.importorskip


def test_every_requirement_names_its_module():
    install_requires, extras = _setup_arguments()
    names = {_name(r) for r in install_requires} | {
        _name(r) for requirements in extras.values() for r in requirements
    }
    unknown = sorted(names - set(MODULES))
    assert not unknown, f"add the module each installs to MODULES: {unknown}"


def test_every_install_requirement_is_imported_by_the_package():
    install_requires, _ = _setup_arguments()
    imported = _imported(PACKAGE_FOLDERS)
    unused = [
        requirement
        for requirement in install_requires
        if MODULES[_name(requirement)] not in imported and _name(requirement) not in NOT_IMPORTED
    ]
    assert not unused, (
        f"in install_requires but never imported by {' or '.join(PACKAGE_FOLDERS)}/: {unused}; "
        "drop it, make it an extra where it is used, or say in NOT_IMPORTED why it is needed"
    )


def test_every_extra_is_imported_where_it_is_used():
    _, extras = _setup_arguments()
    imported = _imported(PACKAGE_FOLDERS + ("tests",))
    unused = [
        f"[{extra}] {requirement}"
        for extra, requirements in extras.items()
        for requirement in requirements
        if MODULES[_name(requirement)] not in imported
    ]
    assert not unused, f"declared in extras_require but imported nowhere: {unused}"


def test_every_third_party_import_of_the_package_is_declared():
    install_requires, extras = _setup_arguments()
    declared = {MODULES[_name(r)] for r in install_requires} | {
        MODULES[_name(r)] for requirements in extras.values() for r in requirements
    }
    undeclared = {
        module: path
        for module, path in _imported(PACKAGE_FOLDERS).items()
        if module not in sys.stdlib_module_names
        and module != "ssl_keras"
        and module not in declared
    }
    assert not undeclared, f"imported but not declared in setup.py: {undeclared}"
