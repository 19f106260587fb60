"""Backend detection and selection: the one place that knows which backends exist.

``"auto"`` takes the first available of cpp, numba, numpy; the environment variable
``INITSCOPE_BACKEND`` changes only what "auto" picks.  A backend asked for by name that is
not available raises ImportError saying what to install, never a silent fallback.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from types import ModuleType

__all__ = ["BACKENDS", "available_backends", "get_backend", "resolve"]

#: Every backend, in the order "auto" tries them.
BACKENDS = ("cpp", "numba", "numpy")

_INSTALL_HINT = {
    "cpp": "the compiled extension initscope._core is missing: reinstall initscope from "
    "source with a C++17 compiler (pip install --force-reinstall initscope)",
    "numba": "numba is not installed: pip install 'initscope[numba]'",
    "numpy": "numpy is missing",
}


@cache
def _load(name: str) -> ModuleType | None:
    """Import backend ``name`` once; None if it cannot be loaded here."""
    try:
        module = importlib.import_module(f"{__name__}.{name}")  # one module per backend
        module.check_available()
    except ImportError:
        return None
    return module


def available_backends() -> list[str]:
    """The backends that can run here, in the order "auto" tries them."""
    return [name for name in BACKENDS if _load(name) is not None]


def resolve(backend: str) -> str:
    """The concrete backend name for ``backend`` ("auto" included); raises if unavailable."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        wanted = os.environ.get("INITSCOPE_BACKEND", "").strip()
        if wanted and wanted != "auto":
            return resolve(wanted)
        for name in BACKENDS:
            if _load(name) is not None:
                return name
    if backend not in BACKENDS:
        raise ValueError(
            f"backend {backend!r} is unknown; choose one of auto, {', '.join(BACKENDS)}"
        )
    if _load(backend) is None:
        raise ImportError(f"backend {backend!r} is not available: {_INSTALL_HINT[backend]}")
    return backend


def get_backend(backend: str) -> tuple[str, ModuleType]:
    """``(name, module)`` of the backend ``backend`` resolves to."""
    name = resolve(backend)
    module = _load(name)
    assert module is not None
    return name, module
