"""The two tidy tables of a sweep, built with pandas (imported only when a sweep runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..result import PropagationResult
from .grid import Config
from .work import FLOAT_FIELDS, INT_FIELDS, Outcome

__all__ = ["HIST_COLUMNS", "SweepFrame", "empty_tables", "tables"]

HIST_COLUMNS = ("config_id", "repeat", "layer", "bin", "low", "high", "count")
RUN_COLUMNS = ("config_id", "repeat", "seed", "layer", "width")


class SweepFrame(pd.DataFrame):
    """The main table of a sweep: a :class:`pandas.DataFrame`, one row per (configuration,
    repeat, layer), with the histogram table as ``.histograms``.

    ``.histograms`` is a DataFrame with one row per (configuration, repeat, layer, bin):
    ``config_id, repeat, layer, bin, low, high, count``; join it to the main table on
    ``config_id, repeat, layer``.  Frames derived from this one (selections, copies) keep a
    reference to the same histogram table.
    """

    # pandas' documented way to carry extra data along operations, by reference
    _metadata = ["histograms"]
    histograms: pd.DataFrame | None = None

    @property
    def _constructor(self) -> type[SweepFrame]:
        return SweepFrame


def tables(
    columns: Sequence[str], done: Sequence[tuple[Config, Outcome]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The main and histogram tables of finished configurations, in the order given."""
    if not done:
        return empty_tables(columns)
    main: dict[str, Any] = {name: [] for name in columns}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in RUN_COLUMNS}
    stats: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    hist: dict[str, list[np.ndarray]] = {name: [] for name in HIST_COLUMNS}
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
        bins = outcome.hist.shape[2]
        edges = outcome.bin_edges
        hist["config_id"].append(np.full(rows * bins, config.config_id, dtype=object))
        hist["repeat"].append(np.repeat(np.arange(repeats, dtype=np.int64), depth * bins))
        hist["layer"].append(
            np.tile(np.repeat(np.arange(1, depth + 1, dtype=np.int64), bins), repeats)
        )
        hist["bin"].append(np.tile(np.arange(bins, dtype=np.int64), rows))
        hist["low"].append(np.tile(edges[:-1], rows))
        hist["high"].append(np.tile(edges[1:], rows))
        hist["count"].append(outcome.hist.reshape(-1))
    data: dict[str, Any] = dict(main)
    data |= {name: np.concatenate(parts[name]) for name in RUN_COLUMNS}
    float_block = np.concatenate(stats)
    int_block = np.concatenate(counts)
    for name in PropagationResult.LAYER_FIELDS:
        if name in INT_FIELDS:
            data[name] = int_block[:, INT_FIELDS.index(name)]
        else:
            data[name] = float_block[:, FLOAT_FIELDS.index(name)]
    frame = _typed(pd.DataFrame(data))
    histograms = _typed(pd.DataFrame({name: np.concatenate(hist[name]) for name in HIST_COLUMNS}))
    return frame, histograms


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column whatever the source (memory, Parquet or CSV)."""
    if "config_id" in frame:
        frame["config_id"] = frame["config_id"].astype(str)
    if "seed" in frame:
        frame["seed"] = frame["seed"].astype(np.uint64)
    return frame


def empty_tables(columns: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    hist = {
        "config_id": pd.Series([], dtype=str),
        **{n: np.empty(0, np.int64) for n in ("repeat", "layer", "bin")},
        "low": np.empty(0),
        "high": np.empty(0),
        "count": np.empty(0, np.int64),
    }
    return pd.DataFrame(main), pd.DataFrame(hist)


def finish(frame: pd.DataFrame, histograms: pd.DataFrame, order: dict[str, int]) -> SweepFrame:
    """Both tables sorted by (grid position, repeat, layer[, bin]), as a :class:`SweepFrame`."""
    frame = frame.drop_duplicates(["config_id", "repeat", "layer"])
    histograms = histograms.drop_duplicates(["config_id", "repeat", "layer", "bin"])
    position = frame["config_id"].map(order)
    frame = frame.assign(_position=position.to_numpy()).sort_values(
        ["_position", "repeat", "layer"], kind="stable"
    )
    hist_position = histograms["config_id"].map(order)
    histograms = histograms.assign(_position=hist_position.to_numpy()).sort_values(
        ["_position", "repeat", "layer", "bin"], kind="stable"
    )
    result = SweepFrame(frame.drop(columns="_position").reset_index(drop=True))
    result.histograms = histograms.drop(columns="_position").reset_index(drop=True)
    return result
