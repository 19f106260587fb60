"""Sweeps: :func:`initscope.propagate` over grids of configurations, written as they finish.

:func:`sweep` runs every combination of a grid on a local thread pool or any
:class:`concurrent.futures.Executor` (Dask), writes the results to a directory as
configurations finish, and resumes after a crash; :func:`load_sweep` reads a written sweep
back.  pandas (and pyarrow, dask, tqdm when used) are imported only when a sweep runs.
"""

from __future__ import annotations

from typing import Any

from .api import SweepError, sweep
from .store import load_sweep

__all__ = ["SweepError", "SweepFrame", "load_sweep", "sweep"]


def __getattr__(name: str) -> Any:
    if name == "SweepFrame":  # a pandas subclass: importing it imports pandas
        from .frames import SweepFrame

        return SweepFrame
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
