"""Lazy package exports (PEP 562): a package names what it exports and from which submodule,
and the submodule is imported on first use, so ``import densefeat.train`` (and every
``densefeat CMD --help``) stays free of torch until a name is actually used."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose ``exports`` map a name to the
    submodule (relative to ``package``) that defines it. A resolved name is stored in the
    package's ``namespace``, so later lookups skip ``__getattr__``."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f".{exports[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
