"""Pictures of sweeps: one layer's statistic as a heatmap over two parameters."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._canvas import require_matplotlib, root, single_axes

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["AGGREGATES", "heatmap"]

#: Names ``heatmap(aggregate=...)`` accepts, to combine the repeats of one configuration.
AGGREGATES = ("mean", "median", "min", "max", "std")
_LOG_SPAN = 100.0  # values spanning at least two decades get a log colour scale

# Axis labels of the mean-field papers' parameters, as they write them.
_LABELS = {"sigma_w": r"$\sigma_w$", "sigma_b": r"$\sigma_b$"}


def _label(column: str) -> str:
    return _LABELS.get(column, column)


def _check_column(frame: pandas.DataFrame, column: Any, name: str) -> str:
    if not isinstance(column, str):
        raise TypeError(f"{name} must be a column name, got {column!r}")
    if column not in frame.columns:
        raise ValueError(
            f"{name}: the frame has no column {column!r}; "
            f"it has {', '.join(map(str, frame.columns))}"
        )
    return column


def _select_layer(frame: pandas.DataFrame, layer: int, x: str, y: str) -> pandas.DataFrame:
    """The rows of one layer; negative layers count from each configuration's deepest."""
    present = frame["layer"]
    if layer > 0:
        if layer > present.max():
            raise ValueError(
                f"layer {layer} is out of range: the frame's layers go from {present.min()} "
                f"to {present.max()}"
            )
        return frame[present == layer]
    key = ["config_id"] if "config_id" in frame.columns else [x, y]
    deepest = frame.groupby(key)["layer"].transform("max")
    if (deepest + layer).min() < 0:
        raise ValueError(
            f"layer {layer} is out of range: the shallowest network in the frame has "
            f"{deepest.min()} layers"
        )
    return frame[present == deepest + 1 + layer]


def _one_configuration_per_cell(rows: pandas.DataFrame, x: str, y: str, value: str) -> None:
    """Refuse to average different configurations that share an (x, y) cell."""
    from ..result import PropagationResult

    cells = rows.groupby([y, x])
    if "config_id" in rows.columns:
        mixed = bool((cells["config_id"].nunique() > 1).any())
    elif "repeat" in rows.columns:
        mixed = bool(rows.duplicated([y, x, "repeat"]).any())
    else:
        return
    if not mixed:
        return
    ignore = {x, y, value, "config_id", "repeat", "seed", "layer", "hist"}
    ignore.update(PropagationResult.LAYER_FIELDS, PropagationResult.GRAD_FIELDS)
    varying = [
        str(column)
        for column in rows.columns
        if column not in ignore and bool((cells[column].nunique(dropna=False) > 1).any())
    ]
    hint = f" (columns that vary: {', '.join(varying)})" if varying else ""
    raise ValueError(
        f"frame holds several configurations per ({x}, {y}) cell{hint}: select one "
        "first, e.g. frame[frame[column] == choice] (initscope plot: --where column=choice)"
    )


def _edges(values: NDArray[np.float64]) -> tuple[NDArray[np.float64], bool]:
    """Cell edges around sorted grid values, and whether the values are log-spaced."""
    if values.size == 1:
        step = abs(values[0]) * 0.1 or 0.5
        return np.array([values[0] - step, values[0] + step]), False
    geometric = bool(values.size > 2 and values[0] > 0)
    if geometric:
        # log-spaced when the ratios are steadier than the steps (np.geomspace, 0.1, 0.3, 1, 3)
        ratios = values[1:] / values[:-1]
        steps = np.diff(values)
        ratio_spread = np.ptp(ratios) / ratios.mean()
        geometric = bool(ratio_spread < 0.2 and ratio_spread < np.ptp(steps) / steps.mean())
    grid = np.log(values) if geometric else values
    middle = 0.5 * (grid[1:] + grid[:-1])
    edges = np.concatenate([[2 * grid[0] - middle[0]], middle, [2 * grid[-1] - middle[-1]]])
    return (np.exp(edges) if geometric else edges), geometric


def heatmap(
    frame: pandas.DataFrame,
    x: str,
    y: str,
    value: str = "std",
    *,
    layer: int = -1,
    aggregate: str = "mean",
    log: bool | None = None,
    ax: Any = None,
) -> Figure:
    """One layer's statistic of a sweep as a heatmap over two of its parameters.

    Works on any DataFrame with the columns ``x``, ``y``, ``value`` and ``layer``, such as
    a sweep's tidy table (one row per configuration, repeat and layer) or the concatenated
    ``to_frame()`` of several runs with their parameters added as columns.

    Parameters
    ----------
    frame
        The table.  If it has ``config_id`` (or ``repeat``) columns, each (x, y) cell must
        hold one configuration: select the others away first.
    x, y
        The columns along the horizontal and the vertical axis, e.g. ``"sigma_w"`` and
        ``"sigma_b"``.  Numeric values are placed at their values (log-spaced ones on a log
        axis), others in the order they sort.
    value
        The column to draw, e.g. ``"std"``, ``"mean"``, ``"zero_fraction"``.
    layer
        The ``layer`` number to draw, from 1; negative numbers count from each network's
        deepest layer (-1, the default, is the last).
    aggregate
        How the repeats of a cell combine: one of ``AGGREGATES``.  A repeat that is NaN
        (a network whose activations overflowed) makes its cell NaN.
    log
        A log colour scale; default: when the values are positive and span two decades.
    ax
        An Axes to draw on; default: a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with a colour bar.  Its first Axes holds the map (a ``QuadMesh`` whose
        array is the pivoted table, rows ``y``, columns ``x``); cells with no value, or not
        positive under a log scale, are grey.
    """
    if not (hasattr(frame, "columns") and hasattr(frame, "groupby")):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    x = _check_column(frame, x, "x")
    y = _check_column(frame, y, "y")
    value = _check_column(frame, value, "value")
    _check_column(frame, "layer", "frame")
    if len({x, y, value}) < 3:
        raise ValueError(
            f"x, y and value must be three different columns, got {x!r}, {y!r}, {value!r}"
        )
    if isinstance(layer, bool | np.bool_) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"layer must be an integer, got {layer!r}")
    if int(layer) == 0:
        raise ValueError("layer: layers are numbered from 1 (and -1 is the last), got 0")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if log is not None and not isinstance(log, bool | np.bool_):
        raise TypeError(f"log must be True, False or None, got {log!r}")
    import pandas as pd

    if not pd.api.types.is_numeric_dtype(frame[value]):
        raise ValueError(f"value: column {value!r} is not numeric")
    if frame.empty:
        raise ValueError("frame is empty")

    rows = _select_layer(frame, int(layer), x, y)
    _one_configuration_per_cell(rows, x, y, value)
    cells = rows.groupby([y, x])[value]
    combined = cells.agg(aggregate)
    # pandas skips NaN by default; an overflowed repeat must show, not vanish into a mean
    combined[rows[value].isna().groupby([rows[y], rows[x]]).any()] = np.nan
    table = combined.unstack(x).sort_index().sort_index(axis=1)
    repeats = int(cells.size().max())

    data = np.ma.masked_invalid(table.to_numpy(dtype=np.float64))
    present = data.compressed()
    if log is None:
        log = bool(
            present.size
            and present.min() >= 0
            and present[present > 0].size
            and present.max() >= _LOG_SPAN * present[present > 0].min()
        )
    elif log and not (present > 0).any():
        raise ValueError(f"log=True needs positive values; column {value!r} has none here")

    matplotlib = require_matplotlib()
    from matplotlib.colors import LogNorm, Normalize

    axes = single_axes(ax, 5.0)
    norm: Normalize
    if log:
        positive = present[present > 0]
        norm = LogNorm(vmin=float(positive.min()), vmax=float(positive.max()))
    else:
        norm = Normalize(*(float(present.min()), float(present.max())) if present.size else ())
    palette = "viridis"
    if not log and present.size and present.min() < 0 < present.max():
        # signed values (a mean): a diverging map, white at zero, so the sign reads at a glance
        palette, bound = "RdBu_r", float(np.abs(present).max())
        norm = Normalize(-bound, bound)
    cmap = matplotlib.colormaps[palette].with_extremes(bad="0.8")

    placed = []
    for column, set_scale, set_ticks, set_ticklabels in (
        (table.columns, axes.set_xscale, axes.set_xticks, axes.set_xticklabels),
        (table.index, axes.set_yscale, axes.set_yticks, axes.set_yticklabels),
    ):
        grid_values = column.to_numpy()
        if pd.api.types.is_numeric_dtype(grid_values) and not pd.api.types.is_bool_dtype(
            grid_values
        ):
            edges, geometric = _edges(grid_values.astype(np.float64))
            if geometric:
                set_scale("log")
            if grid_values.size <= 12:
                set_ticks(grid_values.astype(np.float64))
                set_ticklabels([f"{v:g}" for v in grid_values])
        else:
            edges = np.arange(grid_values.size + 1) - 0.5
            set_ticks(np.arange(grid_values.size))
            set_ticklabels([str(v) for v in grid_values])
        placed.append(edges)
    mesh = axes.pcolormesh(placed[0], placed[1], data, cmap=cmap, norm=norm)
    axes.set_xlabel(_label(x))
    axes.set_ylabel(_label(y))
    drawn = sorted(set(rows["layer"].tolist()))
    if len(drawn) == 1:
        where = f"layer {drawn[0]}"
    else:  # networks of several depths
        where = "the last layer" if layer == -1 else f"layer {layer}"
    spread = f", {aggregate} of {repeats} repeats" if repeats > 1 else ""
    axes.set_title(f"{value} at {where}{spread}")
    root(axes).colorbar(mesh, ax=axes, label=value)
    return root(axes)
