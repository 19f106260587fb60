"""Running configurations: the part of a sweep that executes in threads, processes or on
cluster workers.  It returns plain NumPy arrays only, cheap to send back from a worker."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from ..backends import get_backend
from ..plan import Plan, make_plan
from ..result import PropagationResult, finish_runs, finish_shape

__all__ = [
    "FLOAT_FIELDS",
    "GRAD_FIELDS",
    "INT_FIELDS",
    "Outcome",
    "failed",
    "plan_config",
    "run_batch",
    "run_config",
    "run_seeds",
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


Task = tuple[int, str, Plan, tuple[int, ...]]  # (index, backend, plan, seeds)


def run_seeds(backend: str, plan: Plan, seeds: tuple[int, ...]) -> tuple[list[Plan], list[Any]]:
    """The kernel's part of a configuration: each repeat's plan and raw accumulators.

    When every layer's weights are drawn by the kernel (the plan is its own
    :meth:`~Plan.with_weights`), the repeats differ in their seed alone, and a backend with
    ``run_seeds`` runs them all in one call."""
    module = get_backend(backend)[1]
    if plan.with_weights() is plan and hasattr(module, "run_seeds"):
        return [plan] * len(seeds), module.run_seeds(plan, seeds)
    plans = [replace(plan, seed=seed).with_weights() for seed in seeds]
    return plans, [module.run(p) for p in plans]


def run_config(index: int, backend: str, plan: Plan, seeds: tuple[int, ...]) -> Outcome:
    """Run ``plan`` (planned once, up front) with each seed on ``backend``; an exception
    becomes ``Outcome.error``."""
    return run_batch([(index, backend, plan, seeds)])[0]


def run_batch(tasks: list[Task]) -> list[Outcome]:
    """Run a batch of ``(index, backend, plan, seeds)`` one after the other, each with its
    plan's threads, and finish the statistics of all of them together (per backend and
    :func:`finish_shape`: one vectorised pass instead of one per run).  The task an executor
    runs, sized so that its scheduling cost stays small.  A configuration that raises
    becomes a failed :class:`Outcome`; the others are unaffected."""
    outcomes: list[Outcome | None] = [None] * len(tasks)
    groups: dict[tuple[str, Any], list[tuple[int, list[Plan], list[Any]]]] = {}
    for positions in _sharing_a_plan(tasks):
        for position, plans, raws in _run_together(tasks, positions, outcomes):
            backend, plan = tasks[position][1:3]
            groups.setdefault((backend, finish_shape(plan)), []).append((position, plans, raws))
    for (backend, _), ran in groups.items():
        try:
            _finish_group(tasks, ran, backend, outcomes)
        except Exception:  # finish one by one, so that the error names its configuration
            for item in ran:
                try:
                    _finish_group(tasks, [item], backend, outcomes)
                except Exception as error:
                    outcomes[item[0]] = failed(tasks[item[0]][0], error)
    return cast("list[Outcome]", outcomes)


def _sharing_a_plan(tasks: list[Task]) -> list[list[int]]:
    """The positions of ``tasks`` in groups of consecutive ones with the same backend and
    plan (a grid over seeds: configurations that differ in their seed alone)."""
    groups: list[list[int]] = []
    for position, (_, backend, plan, _) in enumerate(tasks):
        if groups and tasks[groups[-1][0]][1] == backend and tasks[groups[-1][0]][2] is plan:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def _run_together(
    tasks: list[Task], positions: list[int], outcomes: list[Outcome | None]
) -> list[tuple[int, list[Plan], list[Any]]]:
    """``(position, plans, raws)`` of the tasks at ``positions`` (one backend and plan), run
    in one :func:`run_seeds`; if that raises, one by one, so that an error becomes the
    failed outcome of its own configuration and the others are unaffected."""
    backend, plan = tasks[positions[0]][1:3]
    try:
        plans, raws = run_seeds(backend, plan, tuple(s for p in positions for s in tasks[p][3]))
    except Exception as error:
        if len(positions) == 1:
            outcomes[positions[0]] = failed(tasks[positions[0]][0], error)
            return []
        return [run for p in positions for run in _run_together(tasks, [p], outcomes)]
    ran, start = [], 0
    for p in positions:
        stop = start + len(tasks[p][3])
        ran.append((p, plans[start:stop], raws[start:stop]))
        start = stop
    return ran


def _finish_group(
    tasks: list[Task],
    ran: list[tuple[int, list[Plan], list[Any]]],
    backend: str,
    outcomes: list[Outcome | None],
) -> None:
    """Finish the runs of ``ran`` (``(position in tasks, plans, raws)``) in one pass."""
    fields = finish_runs(
        [p for _, plans, _ in ran for p in plans], [r for *_, rs in ran for r in rs], backend
    )
    floats = np.stack([fields[f] for f in FLOAT_FIELDS], axis=2)
    ints = np.stack([fields[f] for f in INT_FIELDS], axis=2)
    grads = None
    if "grad_hist" in fields:
        grads = np.stack([np.asarray(fields[f], dtype=np.float64) for f in GRAD_FIELDS], axis=2)
    start = 0
    for position, plans, _ in ran:
        runs = slice(start, start + len(plans))
        outcomes[position] = Outcome(
            tasks[position][0],
            np.asarray(plans[0].widths, dtype=np.int64),
            floats[runs],
            ints[runs],
            fields["hist"][runs],
            fields["bin_edges"][start],
            grads=None if grads is None else grads[runs],
            grad_hist=None if grads is None else fields["grad_hist"][runs],
            grad_bin_edges=None if grads is None else fields["grad_bin_edges"][runs],
        )
        start += len(plans)


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
