"""Submodules as attributes, imported on first use (PEP 562), for int4lab and its subpackages.

`import int4lab` imports no torch (so `int4lab --help` answers at once); each package's
__getattr__ comes from here, so that `int4lab.layers.RECIPES` or
`int4lab.exercises.registry.mode()` still work after a bare `import int4lab`.
"""
import importlib


def submodules(package):
    """A module-level __getattr__ for `package`: `package.name` imports `package.name`."""
    def __getattr__(name):
        if not name.startswith("_"):
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return __getattr__
