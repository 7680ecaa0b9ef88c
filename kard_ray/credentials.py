"""Secrets come only from the environment and never print: ``repr`` and ``str`` show ``***``."""

from __future__ import annotations

import os


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str | None):
        self._value = value

    @classmethod
    def from_env(cls, name: str | None) -> "Secret":
        return cls(os.environ.get(name) if name else None)

    def reveal(self) -> str | None:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret(***)" if self._value else "Secret(unset)"

    __str__ = __repr__
