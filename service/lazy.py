"""Package faces whose names load on first use.

``service`` and ``service.store`` re-export names from their modules; loading
them eagerly would make importing any one module (the embedded server, the
data-directory lock) import the Redis client and the whole engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``homes[name]`` on first use."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(package)
        value = getattr(importlib.import_module(home), name)
        setattr(module, name, value)
        return value

    return getattr_
