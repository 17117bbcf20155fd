"""Code that runs when a module is first imported, so that `import ssl_keras` stays light.

`import ssl_keras` registers every serializable class of the package with Keras, so that
`keras.saving.load_model` reads any file the package writes. Importing those classes imports
Keras, and so TensorFlow (seconds), which `ssl-keras --help` must not pay for. So the package
registers them when Keras is imported instead: at once if Keras is already loaded, else right
after it loads (`after_import`).

A registering module may import names from other ssl_keras modules. When Keras is first imported
by an ssl_keras module (at its `import keras` line, before the rest of it has run), registering
then would import from a half-run module. So while any ssl_keras module is being imported, the
callback waits until the outermost one has finished.

`around_import` wraps the first import of a module in a context manager (the CLI uses it to
filter TensorFlow's C++ start-up lines, see `ssl_keras.quiet_startup`).
"""

import contextlib
import importlib.abc
import sys
import threading

PACKAGE = "ssl_keras"

_after = {}  # module name -> callbacks to run once it is imported
_around = {}  # module name -> context-manager factories wrapping its import
_state = threading.local()  # .depth: ssl_keras modules being imported; .pending: callbacks


def after_import(name, callback):
    """Calls `callback()` once module `name` is imported: now if it already is, else after it is.

    Args:
        name: str, a top-level module name such as `"keras"`.
        callback: a function of no arguments.
    """
    if name in sys.modules:
        _run_when_no_package_module_is_loading(callback)
        return
    _after.setdefault(name, []).append(callback)
    _install()


def around_import(name, context):
    """Runs the first import of module `name` inside `with context():` (nothing if already imported)."""
    if name in sys.modules:
        return
    _around.setdefault(name, []).append(context)
    _install()


def _run_when_no_package_module_is_loading(callback):
    if getattr(_state, "depth", 0):
        _state.pending = getattr(_state, "pending", []) + [callback]
    else:
        callback()


class _HookedLoader(importlib.abc.Loader):
    """Delegates to the module's own loader, with the hooks around its `exec_module`."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        name = self._name
        in_package = name == PACKAGE or name.startswith(PACKAGE + ".")
        with contextlib.ExitStack() as stack:
            for context in _around.pop(name, ()):
                stack.enter_context(context())
            if in_package:
                _state.depth = getattr(_state, "depth", 0) + 1
            try:
                self._loader.exec_module(module)
            finally:
                if in_package:
                    _state.depth -= 1
        for callback in _after.pop(name, ()):
            _run_when_no_package_module_is_loading(callback)
        if in_package and not _state.depth:
            pending, _state.pending = getattr(_state, "pending", []), []
            for callback in pending:
                callback()

    def __getattr__(self, attribute):  # get_resource_reader, is_package, get_source, ...
        return getattr(self._loader, attribute)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds a hooked module with the finders after it, and wraps the loader they give."""

    def find_spec(self, name, path=None, target=None):
        watched = name in _after or name in _around or name.startswith(PACKAGE + ".")
        if not watched:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookedLoader(spec.loader, name)
                return spec
        return None


_FINDER = _Finder()


def _install():
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
