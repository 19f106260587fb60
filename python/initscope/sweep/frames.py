"""The two tidy tables of a sweep, built with pandas (imported only when a sweep runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..result import PropagationResult
from .grid import Config
from .work import FLOAT_FIELDS, GRAD_FIELDS, INT_FIELDS, Outcome

__all__ = ["HIST_COLUMNS", "SweepFrame", "empty_tables", "tables"]

HIST_COLUMNS = ("config_id", "repeat", "layer", "bin", "low", "high", "count")
RUN_COLUMNS = ("config_id", "repeat", "seed", "layer", "width")


class SweepFrame(pd.DataFrame):
    """The main table of a sweep: a :class:`pandas.DataFrame`, one row per (configuration,
    repeat, layer), with the histogram table as ``.histograms``.

    ``.histograms`` is a DataFrame with one row per (configuration, repeat, layer, bin):
    ``config_id, repeat, layer, bin, low, high, count``; join it to the main table on
    ``config_id, repeat, layer``.  ``.grad_histograms`` has the same columns for the
    gradient histograms of the configurations run with ``gradients=True``.  Frames derived
    from this one (selections, copies) keep a reference to the same histogram tables.
    """

    # pandas' documented way to carry extra data along operations, by reference
    _metadata = ["histograms", "grad_histograms"]
    histograms: pd.DataFrame | None = None
    grad_histograms: pd.DataFrame | None = None

    @property
    def _constructor(self) -> type[SweepFrame]:
        return SweepFrame


def _add_histograms(
    hist: dict[str, list[np.ndarray]], config_id: str, counts: np.ndarray, edges: np.ndarray
) -> None:
    """Rows of ``counts[r, l, b]`` with bin edges ``edges`` (one row of them, or one per
    repeat) appended to the columns of ``hist``."""
    repeats, depth, bins = counts.shape
    rows = repeats * depth
    edges = np.broadcast_to(edges, (repeats, bins + 1))
    hist["config_id"].append(np.full(rows * bins, config_id, dtype=object))
    hist["repeat"].append(np.repeat(np.arange(repeats, dtype=np.int64), depth * bins))
    hist["layer"].append(np.tile(np.repeat(np.arange(1, depth + 1, dtype=np.int64), bins), repeats))
    hist["bin"].append(np.tile(np.arange(bins, dtype=np.int64), rows))
    hist["low"].append(np.repeat(edges[:, :-1], depth, axis=0).reshape(-1))
    hist["high"].append(np.repeat(edges[:, 1:], depth, axis=0).reshape(-1))
    hist["count"].append(counts.reshape(-1))


def tables(
    columns: Sequence[str], done: Sequence[tuple[Config, Outcome]], gradients: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The main, histogram and gradient-histogram tables of finished configurations, in the
    order given; ``gradients``: the main table has the gradient columns (:data:`GRAD_FIELDS`,
    NaN for configurations run without)."""
    if not done:
        return empty_tables(columns, gradients)
    main: dict[str, Any] = {name: [] for name in columns}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in RUN_COLUMNS}
    stats: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    grads: list[np.ndarray] = []
    hist: dict[str, list[np.ndarray]] = {name: [] for name in HIST_COLUMNS}
    grad_hist: dict[str, list[np.ndarray]] = {name: [] for name in HIST_COLUMNS}
    for config, outcome in done:
        repeats, depth = outcome.floats.shape[:2]
        rows = repeats * depth
        for name in columns:
            main[name].extend([config.columns[name]] * rows)
        parts["config_id"].append(np.full(rows, config.config_id, dtype=object))
        parts["repeat"].append(np.repeat(np.arange(repeats, dtype=np.int64), depth))
        parts["seed"].append(np.repeat(np.asarray(config.seeds, dtype=np.uint64), depth))
        parts["layer"].append(np.tile(np.arange(1, depth + 1, dtype=np.int64), repeats))
        parts["width"].append(np.tile(outcome.widths, repeats))
        stats.append(outcome.floats.reshape(rows, -1))
        counts.append(outcome.ints.reshape(rows, -1))
        _add_histograms(hist, config.config_id, outcome.hist, outcome.bin_edges)
        if outcome.grads is not None:
            assert outcome.grad_hist is not None and outcome.grad_bin_edges is not None
            grads.append(outcome.grads.reshape(rows, -1))
            _add_histograms(grad_hist, config.config_id, outcome.grad_hist, outcome.grad_bin_edges)
        else:
            grads.append(np.full((rows, len(GRAD_FIELDS)), np.nan))
    data: dict[str, Any] = dict(main)
    data |= {name: np.concatenate(parts[name]) for name in RUN_COLUMNS}
    float_block = np.concatenate(stats)
    int_block = np.concatenate(counts)
    for name in PropagationResult.LAYER_FIELDS:
        if name in INT_FIELDS:
            data[name] = int_block[:, INT_FIELDS.index(name)]
        else:
            data[name] = float_block[:, FLOAT_FIELDS.index(name)]
    if gradients:
        grad_block = np.concatenate(grads)
        for i, name in enumerate(GRAD_FIELDS):
            data[name] = grad_block[:, i]
    frame = _typed(pd.DataFrame(data))
    histograms = _typed(pd.DataFrame({name: np.concatenate(hist[name]) for name in HIST_COLUMNS}))
    if grad_hist["count"]:
        grad_histograms = _typed(
            pd.DataFrame({name: np.concatenate(grad_hist[name]) for name in HIST_COLUMNS})
        )
    else:
        grad_histograms = empty_tables([])[1]
    return frame, histograms, grad_histograms


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the source (memory, Parquet or CSV)."""
    if "config_id" in frame:
        frame["config_id"] = frame["config_id"].astype(str)
    if "seed" in frame:
        frame["seed"] = frame["seed"].astype(np.uint64)
    return frame


def empty_tables(
    columns: Sequence[str], gradients: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables with no rows but every column, for a sweep with nothing to show."""
    main: dict[str, Any] = {name: pd.Series([], dtype=object) for name in columns}
    main |= {
        "config_id": pd.Series([], dtype=str),
        "repeat": np.empty(0, np.int64),
        "seed": np.empty(0, np.uint64),
        "layer": np.empty(0, np.int64),
        "width": np.empty(0, np.int64),
    }
    for name in PropagationResult.LAYER_FIELDS:
        main[name] = np.empty(0, np.int64 if name in INT_FIELDS else np.float64)
    if gradients:
        for name in GRAD_FIELDS:
            main[name] = np.empty(0, np.float64)
    hist = {
        "config_id": pd.Series([], dtype=str),
        **{n: np.empty(0, np.int64) for n in ("repeat", "layer", "bin")},
        "low": np.empty(0),
        "high": np.empty(0),
        "count": np.empty(0, np.int64),
    }
    return pd.DataFrame(main), pd.DataFrame(hist), pd.DataFrame(hist)


def _sorted_histograms(histograms: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    histograms = histograms.drop_duplicates(["config_id", "repeat", "layer", "bin"])
    position = histograms["config_id"].map(order)
    histograms = histograms.assign(_position=position.to_numpy()).sort_values(
        ["_position", "repeat", "layer", "bin"], kind="stable"
    )
    return histograms.drop(columns="_position").reset_index(drop=True)


def finish(
    frame: pd.DataFrame,
    histograms: pd.DataFrame,
    order: dict[str, int],
    grad_histograms: pd.DataFrame | None = None,
) -> SweepFrame:
    """The tables sorted by (grid position, repeat, layer[, bin]), as a :class:`SweepFrame`."""
    frame = frame.drop_duplicates(["config_id", "repeat", "layer"])
    position = frame["config_id"].map(order)
    frame = frame.assign(_position=position.to_numpy()).sort_values(
        ["_position", "repeat", "layer"], kind="stable"
    )
    result = SweepFrame(frame.drop(columns="_position").reset_index(drop=True))
    result.histograms = _sorted_histograms(histograms, order)
    if grad_histograms is None:
        grad_histograms = empty_tables([])[2]
    result.grad_histograms = _sorted_histograms(grad_histograms, order)
    return result
