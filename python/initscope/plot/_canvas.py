"""matplotlib for the plotting functions: imported on demand, headless when it must be."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH = 10.0  # inches, for every figure: text stays readable when shown ~800 px wide


def require_matplotlib() -> Any:
    """The matplotlib module, or an ImportError that says which extra installs it."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("plotting needs matplotlib: pip install 'initscope[plot]'") from error
    return matplotlib


def _headless() -> bool:
    """Whether no GUI event loop can start here (as matplotlib itself decides, if it can)."""
    from matplotlib import cbook

    detect = getattr(cbook, "_get_running_interactive_framework", None)
    if detect is not None:
        try:
            return bool(detect() == "headless")
        except Exception:  # a private helper: fall back to the environment below
            pass
    unix = sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd"))
    return unix and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _backend_chosen(matplotlib: Any) -> bool:
    """Whether a backend was set by ``MPLBACKEND``, a matplotlibrc or ``matplotlib.use``."""
    params = matplotlib.rcParams
    getter = getattr(params, "_get_backend_or_none", None)
    try:
        if getter is not None:
            return getter() is not None
        sentinel = matplotlib.rcsetup._auto_backend_sentinel
        return dict.__getitem__(params, "backend") is not sentinel
    except (AttributeError, KeyError):  # unknown internals: assume the user chose
        return True


def _pyplot() -> Any:
    """``matplotlib.pyplot``, with the Agg canvas when no backend is chosen and no display.

    matplotlib would fall back to Agg by itself after trying to import every GUI toolkit;
    choosing it directly skips those imports, and only ever replaces matplotlib's own
    automatic choice, never the user's.
    """
    matplotlib = require_matplotlib()
    if "matplotlib.pyplot" not in sys.modules and not _backend_chosen(matplotlib):
        if _headless():
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(height: float) -> Figure:
    """A pyplot figure as wide as every other one, laid out to fit its labels."""
    figure: Figure = _pyplot().figure(figsize=(WIDTH, height), layout="constrained")
    return figure


def root(container: Any) -> Figure:
    """The top-level Figure of an Axes, a SubFigure or a Figure."""
    from matplotlib.figure import Figure

    figure = container
    while not isinstance(figure, Figure):  # an Axes's figure may be a SubFigure
        figure = figure.figure
    return figure


def is_container(ax: Any) -> bool:
    from matplotlib.figure import FigureBase

    return isinstance(ax, FigureBase)


def axes_list(ax: Any, count: int, name: str = "ax") -> list[Axes]:
    """``ax`` as exactly ``count`` Axes, or a TypeError/ValueError naming ``name``."""
    from matplotlib.axes import Axes

    items = [ax] if isinstance(ax, Axes) else ax
    if isinstance(items, np.ndarray):
        items = list(items.ravel())
    if not isinstance(items, Sequence) or not all(isinstance(a, Axes) for a in items):
        raise TypeError(
            f"{name} must be a matplotlib Figure, SubFigure or a sequence of {count} Axes, "
            f"got {type(ax).__name__}"
        )
    if len(items) != count:
        raise ValueError(f"{name} must hold {count} Axes here, got {len(items)}")
    return list(items)


def single_axes(ax: Any, height: float) -> Axes:
    """The caller's Axes, or one in a new figure."""
    from matplotlib.axes import Axes

    if ax is None:
        return new_figure(height).add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
    return ax
