"""The two tidy tables of a sweep, built with pandas (imported only when a sweep runs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from ..result import PropagationResult
from .grid import Config
from .work import FLOAT_FIELDS, GRAD_FIELDS, INT_FIELDS, Outcome

__all__ = ["HIST_COLUMNS", "SweepFrame", "as_sweep_frame", "empty_tables", "finish", "tables"]

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


def _patterned(
    sizes: np.ndarray, keys: Sequence[Any], pattern: Callable[[int], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Columns over consecutive groups of ``sizes`` rows, one group per configuration, where
    configurations with equal ``keys`` have equal columns: ``pattern(c)`` gives
    configuration ``c``'s, built once per key and tiled (a sweep has few shapes and many
    configurations)."""
    members: dict[Any, list[int]] = {}
    for c, key in enumerate(keys):
        members.setdefault(key, []).append(c)
    if len(members) == 1:
        ((first, *_),) = members.values()
        return {name: np.tile(column, len(keys)) for name, column in pattern(first).items()}
    starts = np.cumsum(sizes) - sizes
    out: dict[str, np.ndarray] = {}
    for group in members.values():
        columns = pattern(group[0])
        rows = (starts[group][:, None] + np.arange(sizes[group[0]])).reshape(-1)
        for name, column in columns.items():
            if name not in out:
                out[name] = np.empty(int(sizes.sum()), dtype=column.dtype)
            out[name][rows] = np.tile(column, len(group))
    return out


def _histogram_table(
    config_ids: pd.Series, counts: Sequence[np.ndarray], edges: Sequence[np.ndarray]
) -> pd.DataFrame:
    """Rows ``config_id, repeat, layer, bin, low, high, count`` of the histograms
    ``counts[c][r, l, b]`` of configuration ``c``, with bin edges ``edges[c]``: one row of
    them, or one per repeat."""

    def pattern(c: int) -> dict[str, np.ndarray]:
        repeats, depth, bins = counts[c].shape
        rows = np.broadcast_to(edges[c], (repeats, bins + 1))
        return {
            "repeat": np.repeat(np.arange(repeats, dtype=np.int64), depth * bins),
            "layer": np.tile(np.repeat(np.arange(1, depth + 1, dtype=np.int64), bins), repeats),
            "bin": np.tile(np.arange(bins, dtype=np.int64), repeats * depth),
            "low": np.repeat(rows[:, :-1], depth, axis=0).reshape(-1),
            "high": np.repeat(rows[:, 1:], depth, axis=0).reshape(-1),
        }

    sizes = np.array([c.size for c in counts], dtype=np.int64)
    keys = [(c.shape, e.shape, e.tobytes()) for c, e in zip(counts, edges, strict=True)]
    columns = _patterned(sizes, keys, pattern)
    group = np.repeat(np.arange(len(counts)), sizes)
    data = {"config_id": config_ids.take(group).reset_index(drop=True), **columns}
    data["count"] = np.concatenate([c.reshape(-1) for c in counts]).astype(np.int64, copy=False)
    return pd.DataFrame(data, copy=False)


def tables(
    columns: Sequence[str], done: Sequence[tuple[Config, Outcome]], gradients: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The main, histogram and gradient-histogram tables of finished configurations, in the
    order given; ``gradients``: the main table has the gradient columns (:data:`GRAD_FIELDS`,
    NaN for configurations run without).

    Built column by column from every configuration at once: a configuration's columns are
    inferred by pandas from one value per configuration, then repeated to its rows."""
    if not done:
        return empty_tables(columns, gradients)
    sizes = np.array([o.floats.shape[0] * o.floats.shape[1] for _, o in done], dtype=np.int64)
    group = np.repeat(np.arange(len(done)), sizes)
    per_config = pd.DataFrame({name: [c.columns[name] for c, _ in done] for name in columns})
    config_ids = pd.Series([c.config_id for c, _ in done], dtype=str)
    data: dict[str, Any] = {
        name: per_config[name].take(group).reset_index(drop=True) for name in columns
    }
    data["config_id"] = config_ids.take(group).reset_index(drop=True)

    def pattern(c: int) -> dict[str, np.ndarray]:
        outcome = done[c][1]
        repeats, depth = outcome.floats.shape[:2]
        return {
            "repeat": np.repeat(np.arange(repeats, dtype=np.int64), depth),
            "layer": np.tile(np.arange(1, depth + 1, dtype=np.int64), repeats),
            "width": np.tile(outcome.widths.astype(np.int64, copy=False), repeats),
        }

    keys = [(o.floats.shape[:2], o.widths.tobytes()) for _, o in done]
    indices = _patterned(sizes, keys, pattern)
    seeds = np.concatenate([np.asarray(c.seeds, dtype=np.uint64) for c, _ in done])
    seed_start = np.cumsum([len(c.seeds) for c, _ in done]) - [len(c.seeds) for c, _ in done]
    data["repeat"] = indices["repeat"]
    data["seed"] = seeds[seed_start[group] + indices["repeat"]]
    data["layer"] = indices["layer"]
    data["width"] = indices["width"]
    # one column per row of the transposed blocks: contiguous, taken without a copy
    float_block = np.concatenate([o.floats.reshape(-1, len(FLOAT_FIELDS)) for _, o in done]).T
    int_block = np.concatenate([o.ints.reshape(-1, len(INT_FIELDS)) for _, o in done]).T
    float_block, int_block = float_block.copy(), int_block.copy()
    for name in PropagationResult.LAYER_FIELDS:
        if name in INT_FIELDS:
            data[name] = int_block[INT_FIELDS.index(name)]
        else:
            data[name] = float_block[FLOAT_FIELDS.index(name)]
    if gradients:
        grad_block = np.concatenate(
            [
                o.grads.reshape(-1, len(GRAD_FIELDS))
                if o.grads is not None
                else np.full((o.floats.shape[0] * o.floats.shape[1], len(GRAD_FIELDS)), np.nan)
                for _, o in done
            ]
        )
        grad_block = grad_block.T.copy()
        for i, name in enumerate(GRAD_FIELDS):
            data[name] = grad_block[i]
    frame = _typed(pd.DataFrame(data, copy=False))
    histograms = _typed(
        _histogram_table(config_ids, [o.hist for _, o in done], [o.bin_edges for _, o in done])
    )
    with_grads = [i for i, (_, o) in enumerate(done) if o.grad_hist is not None]
    if with_grads:
        grad_histograms = _typed(
            _histogram_table(
                config_ids.iloc[with_grads].reset_index(drop=True),
                [cast(np.ndarray, done[i][1].grad_hist) for i in with_grads],
                [cast(np.ndarray, done[i][1].grad_bin_edges) for i in with_grads],
            )
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


def _sorted(table: pd.DataFrame, order: dict[str, int], keys: Sequence[str]) -> pd.DataFrame:
    """``table`` by (grid position, then ``keys``), once per key: a row that was written
    twice is kept once."""
    if not len(table):
        return table.reset_index(drop=True)
    found = pd.Index(list(order)).get_indexer(table["config_id"])
    position = np.fromiter(order.values(), dtype=np.int64, count=len(order))[found]
    unknown = found < 0
    if unknown.any():  # not in this sweep (never written so): last, each on its own
        codes = pd.factorize(table["config_id"].to_numpy()[unknown])[0]
        position[unknown] = len(order) + codes
    columns = [position, *(table[k].to_numpy() for k in keys)]
    index = np.lexsort(columns[::-1])
    sorted_columns = [c[index] for c in columns]
    repeated = np.ones(len(index), dtype=bool)
    for column in sorted_columns:
        repeated[1:] &= column[1:] == column[:-1]
    repeated[0] = False
    if repeated.any():
        index = index[~repeated]
    elif np.array_equal(index, np.arange(len(index))):
        return table.reset_index(drop=True)
    return table.take(index).reset_index(drop=True)


def as_sweep_frame(
    frame: pd.DataFrame, histograms: pd.DataFrame, grad_histograms: pd.DataFrame | None = None
) -> SweepFrame:
    """The tables, already in order, as a :class:`SweepFrame`."""
    result = SweepFrame(frame)
    result.histograms = histograms
    result.grad_histograms = empty_tables([])[2] if grad_histograms is None else grad_histograms
    return result


def finish(
    frame: pd.DataFrame,
    histograms: pd.DataFrame,
    order: dict[str, int],
    grad_histograms: pd.DataFrame | None = None,
) -> SweepFrame:
    """The tables sorted by (grid position, repeat, layer[, bin]), each row once, as a
    :class:`SweepFrame`; ``order`` maps config ids to their grid positions."""
    if grad_histograms is None:
        grad_histograms = empty_tables([])[2]
    return as_sweep_frame(
        _sorted(frame, order, ("repeat", "layer")),
        _sorted(histograms, order, ("repeat", "layer", "bin")),
        _sorted(grad_histograms, order, ("repeat", "layer", "bin")),
    )
