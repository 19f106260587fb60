"""Pictures of the theory: the predicted critical line over a sweep's phase diagram."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ._canvas import require_matplotlib, root
from ._sweeps import AGGREGATES, heatmap

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["phase_diagram"]

_DEFAULT_SIGMA_W = tuple(np.round(np.linspace(0.25, 4.0, 61), 4))
_DEFAULT_SIGMA_B = tuple(np.round(np.linspace(0.0, 1.0, 41), 4))


def _activation_of(frame: pandas.DataFrame | None, activation: Any) -> Any:
    if activation is not None:
        return activation
    if frame is not None and "activation" in frame.columns:
        names = frame["activation"].dropna().unique()
        if len(names) == 1:
            return str(names[0])
        if len(names) > 1:
            raise ValueError(
                f"the frame holds several activations ({', '.join(map(str, names))}): select "
                "one first, or pass activation="
            )
    return "tanh"  # propagate's and sweep's default


def _grid(values: Any, default: tuple[float, ...], name: str) -> np.ndarray:
    array = np.asarray(default if values is None else values, dtype=np.float64).reshape(-1)
    if array.size < 2 or not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name} must hold at least two finite values >= 0")
    return np.unique(array)


def phase_diagram(
    frame: pandas.DataFrame | None = None,
    activation: Any = None,
    *,
    value: str = "chi1",
    layer: int = -1,
    aggregate: str = "mean",
    log: bool | None = None,
    chi1_levels: Sequence[float] | None = (0.5, 2.0),
    sigma_w: Any = None,
    sigma_b: Any = None,
    resolution: int = 100,
    ax: Any = None,
) -> Figure:
    """The order-to-chaos phase diagram: the predicted critical line over measured data.

    Draws ``frame`` as :func:`initscope.plot.heatmap` does (``x="sigma_w"``,
    ``y="sigma_b"``), then the critical line ``χ₁ = 1`` of mean-field theory
    (:func:`initscope.theory.critical_line`: solid where its fixed point is stable, dotted
    where not) and, optionally, contours of the predicted ``χ₁``.  Without a frame, the
    heatmap is the predicted ``χ₁`` itself.

    Parameters
    ----------
    frame
        A sweep's table with ``sigma_w``, ``sigma_b``, ``layer`` and ``value`` columns
        (``initscope.sweep`` over ``sigma_w`` and ``sigma_b``), or None.
    activation
        The activation the line is for; default: the frame's single ``activation``, else
        tanh.
    value, layer, aggregate, log
        As :func:`initscope.plot.heatmap`: the statistic drawn (default ``"chi1"``, the
        forward estimate every run measures), the layer, how repeats combine, the colour
        scale.
    chi1_levels
        Levels of predicted ``χ₁`` to draw as thin contours (None or empty: none).
    sigma_w, sigma_b
        The grid of the predicted map when there is no frame (default: 61 values of
        σ_w in 0.25 .. 4 and 41 of σ_b in 0 .. 1).
    resolution
        Points per axis of the predicted ``χ₁`` behind the contours.
    ax
        An Axes to draw on; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure; its first Axes holds the map, the line (label ``"χ₁ = 1 (theory)"``)
        and the contours.
    """
    from .. import theory

    if frame is not None and not (hasattr(frame, "columns") and hasattr(frame, "groupby")):
        hint = (
            " (the activation is the second argument, or activation=)"
            if isinstance(frame, str)
            else ""
        )
        raise TypeError(
            f"frame must be a pandas DataFrame (a sweep's table) or None, got "
            f"{type(frame).__name__}{hint}"
        )
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    act = theory._resolve(_activation_of(frame, activation))
    levels = sorted(float(v) for v in (chi1_levels or ()))
    if any(not np.isfinite(v) or v <= 0 for v in levels):
        raise ValueError(f"chi1_levels must hold positive numbers, got {chi1_levels!r}")
    require_matplotlib()
    if frame is None:
        import pandas as pd

        ws = _grid(sigma_w, _DEFAULT_SIGMA_W, "sigma_w")
        bs = _grid(sigma_b, _DEFAULT_SIGMA_B, "sigma_b")
        fp = theory.fixed_point(act, ws[None, :], bs[:, None], correlation=False, precise=False)
        w_grid, b_grid = np.meshgrid(ws, bs)
        frame = pd.DataFrame(
            {
                "sigma_w": w_grid.ravel(),
                "sigma_b": b_grid.ravel(),
                "layer": 1,
                "chi1 (theory)": np.asarray(fp.chi1).ravel(),
            }
        )
        value, layer = "chi1 (theory)", 1  # the name heatmap writes on the colour bar
        log = True if log is None else log
    figure = heatmap(
        frame, "sigma_w", "sigma_b", value, layer=layer, aggregate=aggregate, log=log, ax=ax
    )
    axes = figure.axes[0] if ax is None else ax
    if value == "chi1 (theory)":
        axes.set_title(f"{act.name}: χ₁ at the fixed point reached from the inputs (theory)")
    xlim, ylim = axes.get_xlim(), axes.get_ylim()
    low_w, high_w = sorted(xlim)
    low_b, high_b = sorted(ylim)
    if levels:
        ws = np.linspace(max(low_w, 0.0), high_w, resolution)
        bs = np.linspace(max(low_b, 0.0), high_b, resolution)
        fp = theory.fixed_point(act, ws[None, :], bs[:, None], correlation=False, precise=False)
        chi1 = np.asarray(fp.chi1)
        drawn = axes.contour(ws, bs, chi1, levels=levels, colors="white", linewidths=0.8)
        axes.clabel(drawn, fmt=lambda v: f"χ₁={v:g}", fontsize="small")
    line = theory.critical_line(act, np.geomspace(1e-8, 1e6, 1401))
    label = "χ₁ = 1 (theory)"
    if line.kind == "point":
        axes.plot(line.sigma_w, line.sigma_b, "o", color="C3", clip_on=False, label=label)
    elif line.kind == "curve":
        stable = line.stable
        for part, style, name in (
            (stable, "-", label),
            (~stable, ":", "χ₁ = 1, unstable q* (theory)"),
        ):
            if part.any():
                w_part = np.where(part, line.sigma_w, np.nan)
                b_part = np.where(part, line.sigma_b, np.nan)
                axes.plot(w_part, b_part, style, color="C3", linewidth=2.0, label=name)
    else:
        axes.plot([], [], " ", label=f"{line.activation}: no critical line")
    axes.set_xlim(xlim)
    axes.set_ylim(ylim)
    axes.legend(loc="upper left", fontsize="small")
    return root(axes)
