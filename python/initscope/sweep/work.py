"""Running configurations: the part of a sweep that executes in threads, processes or on
cluster workers.  It returns plain NumPy arrays only, cheap to send back from a worker."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..backends import get_backend
from ..plan import Plan, make_plan
from ..result import PropagationResult

__all__ = [
    "FLOAT_FIELDS",
    "GRAD_FIELDS",
    "INT_FIELDS",
    "Outcome",
    "failed",
    "plan_config",
    "run_batch",
    "run_config",
]

#: Per-layer statistics of :class:`PropagationResult`, split by dtype.
INT_FIELDS = ("below", "above", "nonfinite", "pre_nonfinite")
FLOAT_FIELDS = tuple(f for f in PropagationResult.LAYER_FIELDS if f not in INT_FIELDS)
#: Per-layer statistics of a run with gradients, all as floats (NaN in a configuration
#: without gradients, so that the columns of a sweep mixing both keep one dtype).
GRAD_FIELDS = PropagationResult.GRAD_FIELDS


@dataclass
class Outcome:
    """One configuration's results, every repeat stacked: ``floats[r, l, f]`` is float
    statistic ``FLOAT_FIELDS[f]`` of layer ``l`` in repeat ``r``; ``error`` says why it
    failed instead (the arrays are then empty).  With gradients, ``grads[r, l, f]`` is
    ``GRAD_FIELDS[f]``, and every repeat has its gradient histograms and their edges (the
    default range depends on the repeat's numbers)."""

    index: int
    widths: NDArray[np.int64]
    floats: NDArray[np.float64]  # (repeats, layers, len(FLOAT_FIELDS))
    ints: NDArray[np.int64]  # (repeats, layers, len(INT_FIELDS))
    hist: NDArray[np.int64]  # (repeats, layers, bins)
    bin_edges: NDArray[np.float64]
    error: str | None = None
    grads: NDArray[np.float64] | None = None  # (repeats, layers, len(GRAD_FIELDS))
    grad_hist: NDArray[np.int64] | None = None  # (repeats, layers, grad_bins)
    grad_bin_edges: NDArray[np.float64] | None = None  # (repeats, grad_bins + 1)


def plan_config(kwargs: dict[str, Any], threads: int) -> tuple[str, Any, Plan]:
    """``(backend name, backend module, plan)`` of a configuration, weights not yet built."""
    options = dict(kwargs)
    name, module = get_backend(options.pop("backend", "auto"))
    plan = make_plan(threads=threads, build_weights=False, **options)
    return name, module, plan


def run_config(index: int, kwargs: dict[str, Any], seeds: tuple[int, ...], threads: int) -> Outcome:
    """Run every repeat of one configuration; an exception becomes ``Outcome.error``."""
    try:
        name, module, plan = plan_config(kwargs, threads)
        floats, ints, hists = [], [], []
        grads, grad_hists, grad_edges = [], [], []
        for seed in seeds:
            seeded = replace(plan, seed=seed).with_weights()
            result = PropagationResult.from_raw(seeded, module.run(seeded), name)
            floats.append(np.stack([getattr(result, f) for f in FLOAT_FIELDS], axis=1))
            ints.append(np.stack([getattr(result, f) for f in INT_FIELDS], axis=1))
            hists.append(result.hist)
            if plan.gradients:
                columns = [np.asarray(getattr(result, f), dtype=np.float64) for f in GRAD_FIELDS]
                grads.append(np.stack(columns, axis=1))
                grad_hists.append(result.grad_hist)
                grad_edges.append(result.grad_bin_edges)
        return Outcome(
            index,
            np.asarray(plan.widths, dtype=np.int64),
            np.asarray(floats, dtype=np.float64),
            np.asarray(ints, dtype=np.int64),
            np.asarray(hists, dtype=np.int64),
            result.bin_edges,
            grads=np.asarray(grads, dtype=np.float64) if plan.gradients else None,
            grad_hist=np.asarray(grad_hists, dtype=np.int64) if plan.gradients else None,
            grad_bin_edges=np.asarray(grad_edges, dtype=np.float64) if plan.gradients else None,
        )
    except Exception as error:  # a failing configuration must not stop the others
        return failed(index, error)


def failed(index: int, error: BaseException) -> Outcome:
    """The outcome of a configuration that raised ``error``."""
    empty = np.empty((0, 0, 0))
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    return Outcome(
        index,
        np.empty(0, np.int64),
        empty,
        empty.astype(np.int64),
        empty.astype(np.int64),
        np.empty(0),
        error=detail,
    )


def run_batch(
    jobs: list[tuple[int, dict[str, Any], tuple[int, ...]]], threads: int
) -> list[Outcome]:
    """Run a batch of ``(index, kwargs, seeds)`` one after the other with ``threads`` each:
    the task an executor runs, sized so that its scheduling cost stays small."""
    return [run_config(index, kwargs, seeds, threads) for index, kwargs, seeds in jobs]
