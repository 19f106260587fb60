"""Scheduling a sweep's configurations: a local thread pool, or any executor.

Locally, a configuration is *small* when one run does fewer than :data:`LARGE_WORK`
multiply-adds: small ones run side by side on a thread pool, one kernel thread each (the
kernel releases the GIL, and side by side they keep every core busy through the parts of a
run that do not parallelise); *large* ones run afterwards, one at a time, with every
thread inside the kernel, so that their memory is held once.  A configuration starts only
while the estimated memory of every configuration in flight stays within the budget.

On an executor, configurations go in batches sized so that each task runs for about
:data:`BATCH_SECONDS`, each run with one thread (a worker process per core is the
executors' model; Dask also pins BLAS to one thread in its workers).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from ..plan import Plan
from .grid import Config, describe
from .work import Outcome, failed, plan_config, run_batch, run_config

__all__ = ["BATCH_SECONDS", "LARGE_WORK", "Job", "prepare", "run_executor", "run_local"]

#: Multiply-adds (``n_samples * sum(fan_in * fan_out)``) from which a run gets every thread
#: and runs alone: about a quarter of a second of one core.
LARGE_WORK = 2**32
#: Seconds of work an executor task aims at: Dask's cost per task is ~2 ms on 2 cores.
BATCH_SECONDS = 0.3
#: Seconds of work in a group of small runs handed to a local thread at once: long enough to
#: make the hand-off cheap, short enough for a fine progress bar and a prompt Ctrl-C.
LOCAL_BATCH_SECONDS = 0.05
#: Multiply-adds per second of one core, float64, for sizing batches (float32: twice).
CORE_RATE = 1.2e10
#: Seconds a run costs besides its GEMMs (planning, drawing, finishing), for sizing batches.
RUN_OVERHEAD = 1e-3
#: Seconds between checks for Ctrl-C while waiting for runs.
POLL = 0.2


@dataclass
class Job:
    """A configuration ready to run: its plan (made once, shared by configurations that
    differ only in their seeds), the backend and its cost estimates."""

    config: Config
    backend: str
    plan: Plan  # seed not set: each repeat replaces it
    work: float  # multiply-adds of all repeats
    memory: int  # bytes while it runs, at its thread count
    large: bool

    @property
    def task(self) -> tuple[int, str, Plan, tuple[int, ...]]:
        """What :func:`run_config` runs."""
        return self.config.index, self.backend, self.plan, self.config.seeds


def cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover - non-Linux


def prepare(configs: list[Config], workers: int, max_memory: int, local: bool) -> list[Job]:
    """Plan every configuration once (checking it) and estimate its work and memory; raise
    ValueError up front for configurations that can never fit ``max_memory``.

    Configurations with the same ``run_key`` (the same run but for the seed) share one
    plan."""
    jobs: list[Job] = []
    too_big: list[str] = []
    planned: dict[tuple[int, ...], tuple[str, Plan, float, int, bool]] = {}
    for config in configs:
        entry = planned.get(config.run_key)
        if entry is None:
            try:
                name, module, plan = plan_config(config.kwargs, 1)
            except (TypeError, ValueError) as error:
                raise type(error)(f"configuration {describe(config)}: {error}") from None
            macs = plan.n_samples * sum(layer.fan_in * layer.fan_out for layer in plan.layers)
            if plan.gradients:
                macs *= 3  # the backward pass: delta_l @ W_l.T and a_{l-1}.T @ delta_l
            large = local and macs >= LARGE_WORK
            if large:
                plan = replace(plan, threads=workers)
            memory = int(module.estimate_memory(plan))
            work = macs * (1 if plan.dtype.itemsize == 8 else 0.5)
            entry = planned[config.run_key] = (name, plan, work, memory, large)
        name, plan, work, memory, large = entry
        if memory > max_memory:
            too_big.append(f"  {describe(config)}: about {_size(memory)}")
        jobs.append(Job(config, name, plan, work * len(config.seeds), memory, large))
    if too_big:
        shown = "\n".join(too_big[:20]) + ("\n  ..." if len(too_big) > 20 else "")
        raise ValueError(
            f"{len(too_big)} configuration(s) need more than max_memory = "
            f"{_size(max_memory)} even when run alone:\n{shown}\n"
            f"lower n_samples, widths or bins (or set chunk_size) for them, or raise max_memory"
        )
    return jobs


def _size(size: int) -> str:
    """Bytes in the unit that shows them best: ``512 bytes``, ``3.5 KiB``, ``1,024 MiB``."""
    if size < 2**10:
        return f"{size} bytes"
    if round(size / 2**10, 1) < 2**10:
        return f"{size / 2**10:.1f} KiB"
    if round(size / 2**20, 1) < 10:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**20:,.0f} MiB"


def _drain(pending: set[cf.Future], timeout: float) -> tuple[set[cf.Future], set[cf.Future]]:
    return cf.wait(pending, timeout=timeout, return_when=cf.FIRST_COMPLETED)  # type: ignore[return-value]


def run_local(
    jobs: list[Job], workers: int, max_memory: int, on_done: Callable[[Outcome], None]
) -> None:
    """Run ``jobs`` here; ``on_done`` receives each outcome in the calling thread."""
    small = [j for j in jobs if not j.large]
    large = [j for j in jobs if j.large]
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="initscope-sweep")
    # groups of small runs share one hand-off to a thread; twice as many groups as threads
    # are in flight so that no thread waits for the next; a group holds the memory of its
    # largest run, and every group in flight counts against the budget
    in_flight = 2 * workers
    running: dict[cf.Future, int] = {}
    try:
        queue = batches(small, workers, LOCAL_BATCH_SECONDS)
        waiting = next(queue, None)
        in_use = 0
        while waiting is not None or running:
            while waiting is not None and len(running) < in_flight:
                memory = max(j.memory for j in waiting)
                if running and in_use + memory > max_memory:
                    break
                running[pool.submit(run_batch, [j.task for j in waiting])] = memory
                in_use += memory
                waiting = next(queue, None)
            finished, _ = _drain(set(running), POLL)
            for future in finished:
                in_use -= running.pop(future)
                for outcome in future.result():
                    on_done(outcome)
        for job in large:
            future = pool.submit(run_config, *job.task)
            while not future.done():
                _drain({future}, POLL)
            on_done(future.result())
    finally:
        # on Ctrl-C: groups not yet started are dropped; those running end with their kernel
        pool.shutdown(wait=False, cancel_futures=True)


def batches(
    jobs: list[Job], slots: int, seconds_each: float = BATCH_SECONDS
) -> Iterator[list[Job]]:
    """Consecutive groups of about ``seconds_each`` of work each, but at least
    ``2 * slots`` groups when there are that many jobs, so every slot gets work."""
    total = sum(j.work / CORE_RATE + RUN_OVERHEAD * len(j.config.seeds) for j in jobs)
    target = min(seconds_each, total / max(1, 2 * slots))
    group: list[Job] = []
    seconds = 0.0
    for job in jobs:
        group.append(job)
        seconds += job.work / CORE_RATE + RUN_OVERHEAD * len(job.config.seeds)
        if seconds >= target:
            yield group
            group, seconds = [], 0.0
    if group:
        yield group


def executor_slots(executor: cf.Executor, workers: int | None) -> int:
    """How many tasks ``executor`` runs at once, as far as it tells."""
    if workers is not None:
        return workers
    for attribute in ("_max_workers",):
        value = getattr(executor, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    client = getattr(executor, "_client", None)
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:  # an unreachable scheduler: fall back to a guess
            pass
    return cpus()


def run_executor(
    jobs: list[Job], executor: cf.Executor, workers: int | None, on_done: Callable[[Outcome], None]
) -> None:
    """Run ``jobs`` on ``executor`` in batches; ``on_done`` receives each outcome here."""
    slots = executor_slots(executor, workers)
    groups: dict[cf.Future, list[Job]] = {}
    for group in batches(jobs, slots):
        groups[executor.submit(run_batch, [j.task for j in group])] = group
    pending = set(groups)
    try:
        while pending:
            finished, pending = _drain(pending, POLL)
            for future in finished:
                try:
                    outcomes = future.result()
                except Exception as error:  # the engine gave up on the task (retries spent)
                    outcomes = [failed(j.config.index, error) for j in groups[future]]
                for outcome in outcomes:
                    on_done(outcome)
    finally:
        for future in pending:
            future.cancel()
