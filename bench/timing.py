"""Interleaved timing of the variants of one configuration, with the results checked as they come.

Every variant runs one batch per round, the starting variant rotating from round to round, so
that a slow phase of the machine is shared by all.  A configuration timed while other processes
were busy is timed again; every network's layer stds and histograms are compared with the
best-NumPy baseline, so that a fast but wrong run is flagged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from machine import CpuMonitor
from variants import Outcome, Runner, Shape, label

#: Each timed sample runs this long at least (networks back to back), as a sweep would.
BATCH_SECONDS = 0.4
BATCH_SECONDS_QUICK = 0.15
#: Pause before each timed sample, so that the previous library's spinning BLAS/OpenMP
#: workers have gone to sleep.
SETTLE_SECONDS = 0.1
SETTLE_SECONDS_QUICK = 0.03
#: Without an explicit number of rounds: 3 to 15, as many as fit in this many seconds.
ROUND_BUDGET_SECONDS = 150.0
#: A configuration timed while other processes took more than this share of the CPUs is
#: timed again (at most RETRIES times, after a pause), and the least disturbed attempt kept.
BUSY_SHARE = 0.10
RETRIES = 2
RETRY_PAUSE_SECONDS = 60.0


@dataclass
class Config:
    """The results of one (shape, dtype): timings, checks and memory of every variant."""

    shape: Shape
    dtype: str
    kinds: list[str]
    warmup: dict[str, float] = field(default_factory=dict)
    batch: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # seconds per network
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    load: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    def median(self, kind: str) -> float | None:
        """Median seconds per network of ``kind``; None if it was not timed."""
        values = self.samples.get(kind)
        return float(np.median(values)) if values else None

    @property
    def other_share(self) -> float:
        """Share of the CPUs other processes took while this was timed (0 if unknown)."""
        return self.load["other_share"] if self.load else 0.0


def std_tolerance(shape: Shape) -> float:
    """Relative tolerance of a layer std between two independent random networks.

    Across seeds a layer's std varies by about ``sqrt(L) / w + 0.5 / sqrt(n w)`` relative (the
    weights' and the inputs' sampling noise; measured with 20 seeds per shape, bench/README.md).
    The tolerance is six times that, at least 1 %: a wrong init scale or activation moves the
    stds by 10 % or more and cannot pass.
    """
    n, w, depth = shape
    return max(0.01, 6 * (math.sqrt(depth) / w + 0.5 / math.sqrt(n * w)))


def check_outcomes(config: Config, outcomes: dict[str, list[Outcome]]) -> None:
    """Compare every variant's layer stds and histograms with the best-NumPy baseline.

    Fills ``config.checks[kind]`` for every variant that returned outcomes: ``ok`` is False
    with the ``problems`` listed when a layer std is off by more than :func:`std_tolerance`,
    a histogram does not hold all ``n * w`` values or its shape differs from the baseline's.
    """
    n, w, depth = config.shape
    reference_kind = next((k for k in ("best", "best_mt", "seed") if outcomes.get(k)), None)
    if reference_kind is None:
        reference_kind = next((k for k in config.kinds if outcomes.get(k)), None)
    if reference_kind is None:
        return
    ref_std = np.median([o.std for o in outcomes[reference_kind]], axis=0)
    ref_hists = [o.hist for o in outcomes[reference_kind] if o.hist is not None]
    ref_hist = np.mean([h / h.sum(axis=1, keepdims=True) for h in ref_hists], axis=0)
    tolerance = std_tolerance(config.shape)
    for kind, results in outcomes.items():
        if not results:
            continue
        stds = np.array([o.std for o in results])
        deviation = float(np.max(np.abs(stds / ref_std - 1)))
        problems = []
        if stds.shape[1] != depth or not np.all(np.isfinite(stds)):
            problems.append("non-finite or missing layer stds")
        if deviation > tolerance:
            problems.append(f"layer std off by {deviation:.1%} (tolerance {tolerance:.1%})")
        hist_distance = 0.0
        for outcome in results:
            if outcome.hist is None:
                continue
            counts = outcome.hist.sum(axis=1)
            if not np.all(counts == n * w):
                problems.append(f"histogram holds {counts.min()} of {n * w} values")
                break
            distance = 0.5 * np.abs(outcome.hist / counts[:, None] - ref_hist).sum(axis=1)
            hist_distance = max(hist_distance, float(distance.max()))
        if hist_distance > max(0.02, 5 * tolerance):
            problems.append(f"histogram differs by {hist_distance:.1%} (total variation)")
        config.checks[kind] = {
            "against": reference_kind,
            "layer_std_median": np.median(stds, axis=0).tolist(),
            "max_std_deviation": deviation,
            "tolerance": tolerance,
            "max_hist_distance": hist_distance,
            "networks_checked": len(results),
            "ok": not problems,
            "problems": sorted(set(problems)),
        }


def time_config(
    config: Config,
    runners: dict[str, Runner],
    repeat: int | None,
    quick: bool,
    log: Callable[[str], None],
) -> None:
    """Time every variant round-robin: a warm-up round, then ``repeat`` rounds, then check."""
    settle = SETTLE_SECONDS_QUICK if quick else SETTLE_SECONDS
    batch_seconds = BATCH_SECONDS_QUICK if quick else BATCH_SECONDS
    outcomes: dict[str, list[Outcome]] = {kind: [] for kind in config.kinds}
    seed = 1
    monitor = CpuMonitor()
    for kind in config.kinds:  # warm-up: page in buffers, JIT, BLAS threads; sizes the batch
        time.sleep(settle)
        start = time.perf_counter()
        runners[kind](seed)
        seed += 1
        config.warmup[kind] = time.perf_counter() - start
        config.batch[kind] = max(1, min(50, round(batch_seconds / config.warmup[kind])))
    round_seconds = sum(config.warmup[k] * config.batch[k] + settle for k in config.kinds)
    rounds = repeat
    if rounds is None:
        rounds = 3 if quick else max(3, min(15, int(ROUND_BUDGET_SECONDS / round_seconds)))
    log(f"  {rounds} rounds of about {round_seconds:.1f} s")
    for round_index in range(rounds):
        shift = round_index % len(config.kinds)
        for kind in config.kinds[shift:] + config.kinds[:shift]:
            time.sleep(settle)
            results = []
            start = time.perf_counter()
            for _ in range(config.batch[kind]):
                results.append(runners[kind](seed))
                seed += 1
            elapsed = time.perf_counter() - start
            config.samples.setdefault(kind, []).append(elapsed / config.batch[kind])
            outcomes[kind] += [r for r in results if r is not None]
    config.load = monitor.stop()
    for kind in config.kinds:
        first, typical = config.warmup[kind], config.median(kind)
        if typical and first > 1.0 and first > 5 * typical:
            config.notes.append(
                f"{label(kind)}: the first network took {first:.1f} s (compilation or "
                "start-up), not counted"
            )
    check_outcomes(config, outcomes)


def time_until_quiet(
    shape: Shape,
    dtype: str,
    kinds: list[str],
    runners: dict[str, Runner],
    notes: list[str],
    repeat: int | None,
    quick: bool,
    log: Callable[[str], None],
) -> Config:
    """Time a configuration, again while other processes were busy; the least disturbed wins.

    ``--quick`` times once: its rows are indicative only.
    """
    attempts: list[Config] = []
    for attempt in range(1 if quick else 1 + RETRIES):
        if attempt:
            log(f"  other processes took {attempts[-1].other_share:.0%} of the CPUs: timing again")
            time.sleep(RETRY_PAUSE_SECONDS)
        config = Config(shape=shape, dtype=dtype, kinds=kinds, notes=list(notes))
        time_config(config, runners, repeat, quick, log)
        attempts.append(config)
        if config.other_share <= BUSY_SHARE:
            break
    config = min(attempts, key=lambda c: c.other_share)
    if len(attempts) > 1:
        config.notes.append(
            f"timed {len(attempts)} times because other processes were busy (CPU share "
            + ", ".join(f"{c.load['other_share']:.0%}" for c in attempts if c.load)
            + "); the least disturbed attempt is reported"
        )
    return config
