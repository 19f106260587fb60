""":func:`sweep`: many configurations of :func:`initscope.propagate`, as two tidy tables."""

from __future__ import annotations

import concurrent.futures as cf
import numbers
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from .._checks import positive_int
from .grid import Config, expand, sweep_id

__all__ = ["SweepError", "sweep"]

#: Seconds between writes of finished configurations to ``out``: what a crash may lose.
FLUSH_SECONDS = 1.0
#: The largest grid run without ``max_configs`` raised.
MAX_CONFIGS = 1_000_000


class SweepError(RuntimeError):
    """Some configurations of a sweep failed; the others finished (and were written).

    ``failures`` lists ``(columns, error)`` pairs: the failed configuration's parameters and
    the error it raised.
    """

    def __init__(self, message: str, failures: list[tuple[dict[str, Any], str]]) -> None:
        super().__init__(message)
        self.failures = failures


def _machine_memory() -> int:
    from ..api import _machine_memory as machine

    return machine()


def _progress(progress: Any, total: int, initial: int) -> Any:
    if progress is None:
        progress = sys.stderr is not None and sys.stderr.isatty()
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        raise ImportError("progress=True needs tqdm: pip install 'initscope[sweep]'") from None
    return tqdm(total=total, initial=initial, unit="config", desc="sweep", smoothing=0.1)


def sweep(
    grid: Mapping[str, Any],
    *,
    fixed: Mapping[str, Any] | None = None,
    repeats: int = 1,
    seed: int = 0,
    executor: cf.Executor | None = None,
    workers: int | None = None,
    out: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool | None = None,
    max_memory: int | None = None,
    max_configs: int | None = MAX_CONFIGS,
) -> Any:
    """Run :func:`initscope.propagate` over the cartesian product of ``grid``.

    Parameters
    ----------
    grid
        Parameter names mapped to lists of values, e.g. ``{"sigma_w": [1.0, 1.5],
        "depth": [10, 50]}``; every combination is one configuration.  Names are
        propagate's keywords (``widths, init, activation, n_samples, input_dim, bias,
        seed, dtype, bins, hist_range, backend, chunk_size, gradients, grad_bins,
        grad_range``) and four conveniences:

        - ``width`` and ``depth``: ``widths = [width] * depth`` (both needed; not with
          ``widths``);
        - ``sigma_w``: weights of variance ``sigma_w**2 / fan_in``, the mean-field
          parameterisation.  It keeps the shape of ``init``: with the default ``"xavier"``
          or any zero-mean normal scheme the weights are N(0, σ_w²/fan_in); with a
          zero-mean uniform scheme (``"he_uniform"``, ``"uniform"``...) U(-l, l) of that
          variance; with Keras's truncated normals the same truncation.  Schemes without a
          variance to set (constants, a non-zero mean, orthogonal, identity, sparse,
          callables) or a list of inits per layer raise ValueError;
        - ``sigma_b``: the std of the biases, ``bias``'s other name (not with ``bias``).

        ``threads``, ``max_memory``, ``keep_activations``, ``inputs`` and ``output_grad``
        are not accepted.
    fixed
        Parameters shared by every configuration, with the same names.
    repeats
        Runs of each configuration, each with its own seed.  Repeat ``r`` of a
        configuration uses the seed hashed from ``seed``, the configuration's
        ``config_id`` and ``r``: the same numbers on any machine, executor or worker count.
        A ``seed`` in ``grid`` or ``fixed`` is used as it is instead (``repeats`` must
        then be 1).
    seed
        The sweep's seed, in ``[0, 2**64)``.
    executor
        A :class:`concurrent.futures.Executor` to run on, e.g. a Dask cluster's
        ``distributed.Client(address).get_executor()``.  Configurations go in batches of
        about 0.3 s of work; each run uses one thread.  Default: a thread pool here.
    workers
        Configurations run side by side here (default: the CPUs this process may use).
        Small ones (under 2**32 multiply-adds) run side by side with one thread each,
        large ones one at a time with ``workers`` threads.  With ``executor``, the number
        of tasks it runs at once, for sizing batches (default: what it reports).
    out
        A directory the results are written to as configurations finish: Parquet parts
        (pyarrow), or CSV parts if the name ends in ``.csv``.  Read it with
        :func:`load_sweep`.
    resume
        With ``out`` from an earlier run of the same sweep, skip the configurations it
        holds.  ``False`` discards what ``out`` holds (saying so) and starts over; an
        ``out`` of another sweep raises ValueError unless ``resume=False``.
    progress
        Show a tqdm progress bar (default: when stderr is a terminal).
    max_memory
        Bytes the configurations running at once may need together (default: 3/4 of the
        machine's memory, as :func:`propagate`).  One that needs more alone raises
        ValueError before anything runs.
    max_configs
        Refuse a grid of more configurations than this (``None``: no limit).

    Returns
    -------
    SweepFrame
        A :class:`pandas.DataFrame` with one row per (configuration, repeat, layer): the
        configuration's columns (the names of ``grid`` and ``fixed``), ``config_id``,
        ``repeat``, ``seed``, ``layer`` (from 1), ``width`` and every per-layer statistic of
        :class:`PropagationResult` (``mean, std, min, max, pre_mean, pre_std, ...,
        chi1``).  When some configuration has ``gradients=True``, the gradient statistics
        too (``PropagationResult.GRAD_FIELDS``: ``grad_std, weight_grad_ratio,
        chi1_measured, ...``, all floats, NaN in configurations without gradients).  Its
        ``.histograms`` is the histogram table: ``config_id, repeat, layer, bin, low,
        high, count``, and ``.grad_histograms`` the same for the gradient histograms.  With
        ``out``, all hold every configuration written there.

    Raises
    ------
    SweepError
        After the other configurations finished, if some failed; it lists them.
    """
    n_repeats = positive_int(repeats, "repeats")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(
            f"executor must be a concurrent.futures.Executor (for Dask: "
            f"Client(...).get_executor()), got {type(executor).__name__}"
        )
    n_workers = None if workers is None else positive_int(workers, "workers")
    budget = (
        _machine_memory() * 3 // 4 if max_memory is None else positive_int(max_memory, "max_memory")
    )
    limit = None if max_configs is None else positive_int(max_configs, "max_configs")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {resume!r}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")

    configs, identity = expand(grid, fixed, repeats=n_repeats, seed=int(seed), max_configs=limit)
    columns = list(configs[0].columns)
    gradients = any(c.kwargs.get("gradients", False) for c in configs)

    from . import store as store_module
    from .frames import as_sweep_frame, tables
    from .runner import cpus, prepare, run_executor, run_local

    store = None
    if out is not None:
        store = store_module.Store(out, identity, sweep_id(identity), resume)
    else:
        import pandas  # noqa: F401  (fail here, before any work, if it is missing)
    local_workers = n_workers or cpus()
    done: set[str] = set()
    if store is not None:
        done = store.start([c.config_id for c in configs], columns, gradients)
    todo = [c for c in configs if c.config_id not in done]
    jobs = prepare(todo, local_workers, budget, local=executor is None)
    bar = _progress(progress, len(configs), len(configs) - len(todo))

    by_index = {c.index: c for c in todo}
    finished: list[tuple[Config, Any]] = []
    unwritten: list[tuple[Config, Any]] = []
    failures: list[tuple[dict[str, Any], str]] = []
    last_write = time.monotonic()

    def flush() -> None:
        nonlocal last_write
        if store is not None and unwritten:
            store.write(*tables(columns, unwritten, gradients))
            unwritten.clear()
        last_write = time.monotonic()

    def on_done(outcome: Any) -> None:
        config = by_index[outcome.index]
        if outcome.error is not None:
            failures.append((config.columns, outcome.error))
        else:
            (unwritten if store is not None else finished).append((config, outcome))
            if time.monotonic() - last_write >= FLUSH_SECONDS:
                flush()
        if bar is not None:
            bar.update(1)

    try:
        if executor is None:
            run_local(jobs, local_workers, budget, on_done)
        else:
            run_executor(jobs, executor, n_workers, on_done)
    finally:
        # also on Ctrl-C: what finished is kept
        flush()
        if bar is not None:
            bar.close()
    if failures:
        shown = "\n".join(
            f"  {', '.join(f'{k}={v}' for k, v in params.items())}: {error}"
            for params, error in failures[:20]
        )
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise SweepError(
            f"{len(failures)} of {len(configs)} configurations failed (the others "
            f"finished{' and were written' if store is not None else ''}):\n{shown}{more}",
            failures,
        )
    if store is not None:
        return store_module.load_sweep(store.path)
    finished.sort(key=lambda done: done[0].index)  # the grid's order, as the tables show it
    return as_sweep_frame(*tables(columns, finished, gradients))
