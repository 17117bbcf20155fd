"""The package's layout rules (STYLE.md, "Where things go"), read from the source without importing it.

- No module imports a private name (`_x`) from another ssl_keras module, neither with
  `from m import _x` nor as `m._x`: a name two files need has found its public home.
- The import graph among ssl_keras modules has no cycle. Function-level imports count too: they
  hide a cycle from Python's import machinery, not from the reader.
- Every import points down `LAYERS` (data, runs, building blocks, probing, pretraining,
  localization, gradcam and compare, experiment, cli).
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# cli/ is installed as the package ssl_keras.cli (see setup.py's package_dir).
PACKAGE_FOLDERS = {"ssl_keras": REPO / "ssl_keras", "ssl_keras.cli": REPO / "cli"}


def _modules():
    """`{dotted module name: path}` of every module of the package, packages included."""
    modules = {}
    for package, folder in PACKAGE_FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([package] + parts)] = path
    return modules


MODULES = _modules()


def _imports(tree):
    """Yields `(line, imported module, name or None)` for every ssl_keras import in the tree.

    `from a.b import c` yields `(a.b.c, None)` when `c` is a module, else `(a.b, "c")`;
    `import a.b` yields `(a.b, None)`.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    yield node.lineno, alias.name, None, alias.asname or alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in MODULES:
                    yield node.lineno, submodule, None, alias.asname or alias.name
                else:
                    yield node.lineno, node.module, alias.name, alias.asname or alias.name


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _parsed():
    return {
        module: ast.parse(path.read_text(encoding="utf-8"), str(path))
        for module, path in MODULES.items()
    }


def test_the_walk_finds_the_stage_folders():
    # A walk that found nothing would pass the tests below for the wrong reason.
    for module in (
        "ssl_keras.runs.config",
        "ssl_keras.localization.detect",
        "ssl_keras.data.voc",
        "ssl_keras.cli.main",
    ):
        assert module in MODULES


def test_no_module_imports_a_private_name_from_another():
    found = []
    for module, tree in _parsed().items():
        module_aliases = {}
        for line, imported, name, alias in _imports(tree):
            if imported == module:
                continue
            if name is None:
                # `import a.b` binds `a`, so only an `as` alias or a `from` import names the module.
                module_aliases[alias] = imported
            elif _is_private(name):
                found.append(
                    f"{MODULES[module].relative_to(REPO)}:{line}: from {imported} import {name}"
                )
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases
            ):
                found.append(
                    f"{MODULES[module].relative_to(REPO)}:{node.lineno}: "
                    f"{node.value.id}.{node.attr} ({module_aliases[node.value.id]})"
                )
    assert not found, "private names used across files:\n" + "\n".join(found)


def _import_graph():
    graph = {module: set() for module in MODULES}
    for module, tree in _parsed().items():
        for _, imported, _, _ in _imports(tree):
            if imported != module:
                graph[module].add(imported)
    return graph


def _find_cycle(graph):
    """One cycle of `graph` as a list `[a, b, ..., a]`, or None."""
    done, on_path = set(), []

    def visit(node):
        if node in on_path:
            return on_path[on_path.index(node) :] + [node]
        if node in done:
            return None
        on_path.append(node)
        for successor in sorted(graph[node]):
            cycle = visit(successor)
            if cycle:
                return cycle
        on_path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_reports_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_among_modules_have_no_cycle():
    cycle = _find_cycle(_import_graph())
    if cycle:
        pytest.fail("import cycle (top-level and function-level imports): " + " -> ".join(cycle))


LAYERS = (
    ("data",),
    ("runs",),
    ("backbone", "optimizers", "resampling", "model_config"),
    ("probing",),
    ("pretraining",),
    ("localization",),
    ("gradcam", "compare"),
    ("experiment",),
    ("cli",),
)
"""The package's layers, lowest first: a module imports only from its own layer or below.

Probing sits below pretraining because pretraining's probe monitor measures the encoder with
it; the shared building blocks sit on `runs/` (configs, run files) and `data/`.
"""
LAYER_FREE = ("ssl_keras", "ssl_keras.import_hooks", "ssl_keras.quiet_startup")
"""The package's `__init__` and its import-time hooks, which any layer may use."""


def _layer(module):
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else None
    for rank, layer in enumerate(LAYERS):
        if name in layer:
            return rank
    return None


def test_every_module_is_in_a_layer():
    unplaced = [m for m in MODULES if m not in LAYER_FREE and _layer(m) is None]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_every_import_points_down_the_layers():
    upward = []
    for module, tree in _parsed().items():
        if module in LAYER_FREE:
            continue
        for line, imported, _, _ in _imports(tree):
            if imported in LAYER_FREE:
                continue
            if _layer(imported) > _layer(module):
                upward.append(f"{MODULES[module].relative_to(REPO)}:{line} imports {imported}")
    assert not upward, "imports that point up the layers: " + "; ".join(upward)


def test_the_layer_check_sees_an_upward_import():
    assert _layer("ssl_keras.data.voc") < _layer("ssl_keras.pretraining.pretrain")
    assert _layer("ssl_keras.cli.main") == len(LAYERS) - 1
