"""Reading a provider's JSON without giving up on the first odd field.

A webhook payload is the provider's, not ours: a field of the wrong type is
no reason to lose the message around it. ``Reader`` reads optional fields
and, where one is present but unreadable, notes a warning (kept with the
message) and answers None, so the caller stores what it can.
"""

from __future__ import annotations

import math
from typing import Any

Obj = dict[str, Any]


class Reader:
    """Typed access to one message's fields, collecting warnings by path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings: list[str] = []

    def warn(self, where: str, problem: str) -> None:
        self.warnings.append(f"{where} {problem}")

    def obj(self, parent: Obj | None, key: str, where: str = "") -> Obj | None:
        value = None if parent is None else parent.get(key)
        if value is None or isinstance(value, dict):
            return value
        self.warn(_join(where, key), "is not an object; ignored")
        return None

    def items(self, parent: Obj | None, key: str, where: str = "") -> list[Any]:
        value = None if parent is None else parent.get(key)
        if value is None:
            return []
        if isinstance(value, list):
            return value
        self.warn(_join(where, key), "is not a list; ignored")
        return []

    def objects(self, parent: Obj | None, key: str) -> list[tuple[str, Obj]]:
        """The objects of the list ``parent[key]``, each with its path; an item
        that is not an object is warned about and left out."""
        found = []
        for i, item in enumerate(self.items(parent, key)):
            where = f"{key}[{i}]"
            if isinstance(item, dict):
                found.append((where, item))
            else:
                self.warn(where, "is not an object; ignored")
        return found

    def text(self, parent: Obj | None, key: str, where: str = "") -> str | None:
        """A non-empty string, else None (an empty string is no value)."""
        value = None if parent is None else parent.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)  # an id sent as a number: keep it, as text
        self.warn(_join(where, key), "is not a string; ignored")
        return None

    def number(self, parent: Obj | None, key: str, where: str = "") -> float | None:
        value = None if parent is None else parent.get(key)
        if value is None:
            return None
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            try:
                number = float(value)
            except (ValueError, OverflowError):  # not a number, or beyond a float
                pass
            else:
                if math.isfinite(number):
                    return number
        self.warn(_join(where, key), "is not a number; ignored")
        return None

    def flag(self, parent: Obj | None, key: str, where: str = "") -> bool | None:
        value = None if parent is None else parent.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.warn(_join(where, key), "is not true or false; ignored")
        return None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def first(*values: str | None) -> str | None:
    """The first non-empty string, else None."""
    return next((v for v in values if v), None)
