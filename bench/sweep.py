"""Sweep throughput, in configurations per second, against the loops users write today.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/sweep.py [--configs 1000]

Side by side in one run, for ``--configs`` networks of width 256, depth 10, 1,000 samples
(one seed each): a plain loop of default ``propagate`` calls, the same loop with
``threads=1``, ``initscope.sweep`` on the local thread pool, and ``initscope.sweep`` on a
2-worker ``distributed.LocalCluster``; then ``--tiny`` networks of width 64, depth 10, 100
samples, where the cost per call dominates.  Every sweep's statistics are checked against
the loop's.  The kernel's own runs, one at a time and two side by side on threads with no
other Python work, give the limit a sweep on this machine can reach ("limits").  ``--out
PATH`` saves the figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import initscope

#: Targets on a 2-core machine: ratios of configurations per second.
TARGETS = {
    "sweep / loop threads=1": 1.9,
    "sweep / loop default": 1.25,
    "cluster / loop threads=1": 1.6,
}
TINY_TARGET = 2000.0  # configurations per second


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    time.sleep(0.5)  # OpenBLAS threads spin ~0.1 s after a call: let them rest
    start = time.perf_counter()
    value = run()
    return time.perf_counter() - start, value


def _loop(seeds: list[int], shape: dict[str, int], threads: int | None) -> np.ndarray:
    widths = [shape["width"]] * shape["depth"]
    return np.array(
        [
            initscope.propagate(widths, n_samples=shape["n_samples"], seed=s, threads=threads).std
            for s in seeds
        ]
    )


def _kernel(seeds: list[int], shape: dict[str, int], side_by_side: int) -> np.ndarray:
    """The kernel's own work: one planned run per seed on the C++ backend, one thread each,
    ``side_by_side`` of them at once on threads of this process (the kernel releases the
    GIL): what a sweep could reach with no Python work at all."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from initscope.backends import get_backend
    from initscope.plan import make_plan

    module = get_backend("cpp")[1]
    plan = make_plan([shape["width"]] * shape["depth"], n_samples=shape["n_samples"], threads=1)

    def run(part: list[int]) -> list[np.ndarray]:
        return [np.asarray(module.run(replace(plan, seed=s)).unit_m2[-1]) for s in part]

    parts = [seeds[i::side_by_side] for i in range(side_by_side)]
    with ThreadPoolExecutor(side_by_side) as pool:
        done = list(pool.map(run, parts))
    return np.array([m2 for part in done for m2 in part])


def _sweep(seeds: list[int], shape: dict[str, int], **options: Any) -> np.ndarray:
    frame = initscope.sweep({"seed": seeds}, fixed=shape, progress=False, **options)
    return frame["std"].to_numpy().reshape(len(seeds), shape["depth"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--tiny", type=int, default=10_000)
    parser.add_argument("--no-cluster", action="store_true")
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()

    shape = {"width": 256, "depth": 10, "n_samples": 1000}
    seeds = list(range(args.configs))
    rates: dict[str, float] = {}
    checks: dict[str, bool] = {}
    reference = None
    variants: list[tuple[str, Callable[[], np.ndarray]]] = [
        ("loop default", lambda: _loop(seeds, shape, None)),
        ("loop threads=1", lambda: _loop(seeds, shape, 1)),
        ("sweep", lambda: _sweep(seeds, shape)),
    ]
    cluster = client = None
    if not args.no_cluster:
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = distributed.Client(cluster)
        executor = client.get_executor()
        _sweep(seeds[:4], shape, executor=executor)  # workers import initscope once
        variants.append(("cluster", lambda: _sweep(seeds, shape, executor=executor)))
    for name, run in variants:
        seconds, stds = _timed(run)
        rates[name] = args.configs / seconds
        if reference is None:
            reference = stds
        checks[name] = bool(np.array_equal(stds, reference))
        print(f"{name:>16}: {rates[name]:8.1f} configs/s ({seconds:.2f} s)", flush=True)
    # the limit: the kernel's own time, one run at a time and two side by side
    part = seeds[: max(2, args.configs // 4)]
    for name, side in (("kernel alone", 1), ("kernel alone x2", 2)):
        seconds, _ = _timed(functools.partial(_kernel, part, shape, side))
        rates[name] = len(part) / seconds
        print(f"{name:>16}: {rates[name]:8.1f} configs/s ({seconds:.2f} s)", flush=True)
    if client is not None and cluster is not None:
        client.close()
        cluster.close()

    tiny = {"width": 64, "depth": 10, "n_samples": 100}
    tiny_seeds = list(range(args.tiny))
    seconds, tiny_stds = _timed(lambda: _sweep(tiny_seeds, tiny))
    rates["tiny sweep"] = args.tiny / seconds
    loop_seconds, tiny_loop = _timed(lambda: _loop(tiny_seeds[:2000], tiny, 1))
    rates["tiny loop threads=1"] = 2000 / loop_seconds
    checks["tiny sweep"] = bool(np.array_equal(tiny_stds[:2000], tiny_loop))
    print(f"{'tiny sweep':>16}: {rates['tiny sweep']:8.1f} configs/s ({seconds:.2f} s)")
    print(f"{'tiny loop t=1':>16}: {rates['tiny loop threads=1']:8.1f} configs/s")
    for name, side in (("tiny kernel alone", 1), ("tiny kernel alone x2", 2)):
        seconds, _ = _timed(functools.partial(_kernel, tiny_seeds[:4000], tiny, side))
        rates[name] = 4000 / seconds
        print(f"{name:>16}: {rates[name]:8.1f} configs/s ({seconds:.2f} s)")

    ratios = {
        "sweep / loop threads=1": rates["sweep"] / rates["loop threads=1"],
        "sweep / loop default": rates["sweep"] / rates["loop default"],
    }
    # what no Python work at all would give: the kernel's own runs, two side by side
    limits = {
        "sweep / loop threads=1": rates["kernel alone x2"] / rates["loop threads=1"],
        "sweep / loop default": rates["kernel alone x2"] / rates["loop default"],
        "cluster / loop threads=1": rates["kernel alone x2"] / rates["loop threads=1"],
        "tiny configs/s": rates["tiny kernel alone x2"],
    }
    if "cluster" in rates:
        ratios["cluster / loop threads=1"] = rates["cluster"] / rates["loop threads=1"]
    print()
    for name, value in ratios.items():
        verdict = "met" if value >= TARGETS[name] else "NOT met"
        print(
            f"{name:>26}: {value:5.2f}x  (target {TARGETS[name]}x: {verdict}; the kernel "
            f"alone, two side by side: {limits[name]:.2f}x)"
        )
    verdict = "met" if rates["tiny sweep"] >= TINY_TARGET else "NOT met"
    print(
        f"{'tiny configs/s':>26}: {rates['tiny sweep']:7.0f}  (target {TINY_TARGET:.0f}: "
        f"{verdict}; the kernel alone, two side by side: {limits['tiny configs/s']:.0f})"
    )
    print("results identical to the loop:", all(checks.values()), checks)
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(
                {
                    "machine": platform.processor() or platform.machine(),
                    "configs": args.configs,
                    "tiny": args.tiny,
                    "rates": rates,
                    "ratios": ratios,
                    "limits": limits,
                    "checks": checks,
                },
                stream,
                indent=2,
            )
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
