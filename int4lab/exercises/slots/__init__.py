"""Every exercise slot of the course, registered on import (one module per lesson topic).

Adding a slot: create a module here that calls registry.register(Slot(...)); it is picked up
automatically (see docs/architecture.md).
"""
import importlib
import pkgutil

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _m.name != "common":
        importlib.import_module(f"{__name__}.{_m.name}")
