"""Every module of the package says what it exports: ``__all__`` lists its public names, and only names it has."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import kg_etl

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(kg_etl.__path__, "kg_etl.") if not info.name.endswith("__main__")
)


def _defined_here(module: ModuleType) -> set[str]:
    """Public classes and functions the module defines (constants cannot tell where they were made)."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    if module.__file__ and module.__file__.endswith("__init__.py") and not _defined_here(module):
        return  # a package with nothing of its own
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert _defined_here(module) <= set(exported), f"{name}: public but not in __all__"
    assert all(hasattr(module, n) for n in exported), f"{name}: __all__ names something it lacks"
