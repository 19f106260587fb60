"""The cost of back-propagated gradients: ``gradients=True`` against the forward-only run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/gradients.py [--rounds 7]

Side by side in one process, for each shape (samples × width × depth) and dtype: the same
network (Xavier, tanh, 30 bins) forward only and with gradients, alternating, each median of
``--rounds`` runs; ``--backends cpp numba``. Before timing, each backend's gradient
statistics are checked against the NumPy reference on a small network (float64, rtol 1e-10),
and every timed run's statistics against the first run of its kind. ``--out PATH`` saves
the figures and the machine report as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import initscope

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

#: The targets: the gradients run over the forward-only run, by width.
TARGETS = {500: 2.2, 2048: 2.1}
SHAPES = ((1000, 500, 10), (1000, 2048, 10))
CHECKED = ("grad_std", "grad_mean", "weight_grad_std", "weight_grad_norm", "grad_hist")


def _check_against_reference(backend: str) -> None:
    args: dict[str, Any] = {"n_samples": 300, "bias": 0.1, "gradients": True, "seed": 5}
    got = initscope.propagate([40, 30, 20], backend=backend, **args)
    want = initscope.propagate([40, 30, 20], backend="numpy", **args)
    for name in CHECKED:
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-10)


def _fingerprint(result: initscope.PropagationResult) -> bytes:
    return b"".join(np.asarray(getattr(result, name)).tobytes() for name in ("std", *CHECKED))


def _time(backend: str, shape: tuple[int, int, int], dtype: str, rounds: int) -> dict[str, Any]:
    n, width, depth = shape
    widths = [width] * depth
    times: dict[bool, list[float]] = {False: [], True: []}
    seen: dict[bool, bytes] = {}
    for _ in range(rounds + 1):  # the first round warms up
        for gradients in (False, True):
            time.sleep(0.2)  # OpenBLAS threads spin ~0.1 s after a call: let them rest
            start = time.perf_counter()
            result = initscope.propagate(
                widths, n_samples=n, dtype=dtype, backend=backend, gradients=gradients
            )
            times[gradients].append(time.perf_counter() - start)
            key = _fingerprint(result) if gradients else result.std.tobytes()
            if seen.setdefault(gradients, key) != key:
                raise AssertionError(f"{backend} {shape} {dtype}: results changed between runs")
    forward = statistics.median(times[False][1:])
    backward = statistics.median(times[True][1:])
    return {
        "backend": backend,
        "shape": list(shape),
        "dtype": dtype,
        "forward_ms": forward * 1e3,
        "gradients_ms": backward * 1e3,
        "ratio": backward / forward,
        "target": TARGETS.get(width),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--backends", nargs="+", default=["cpp"])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--out", default=None, help="write the figures to this JSON file")
    args = parser.parse_args()

    for backend in args.backends:
        _check_against_reference(backend)
    rows = []
    print(f"{'backend':<7} {'shape':<14} {'dtype':<8} {'forward':>10} {'gradients':>10} ratio")
    for backend in args.backends:
        for shape in SHAPES:
            for dtype in args.dtypes:
                row = _time(backend, shape, dtype, args.rounds)
                rows.append(row)
                target = row["target"]
                verdict = (
                    "" if target is None else (" met" if row["ratio"] <= target else " NOT met")
                )
                print(
                    f"{backend:<7} {'×'.join(map(str, shape)):<14} {dtype:<8} "
                    f"{row['forward_ms']:8.1f}ms {row['gradients_ms']:8.1f}ms "
                    f"{row['ratio']:5.2f}x (target {target}x:{verdict})",
                    flush=True,
                )
    report = {
        "machine": machine.machine_name(),
        "cpu": machine.cpu_info(),
        "blas": machine.blas_info(),
        "environment": machine.environment(),
        "commit": machine.git_commit(),
        "rounds": args.rounds,
        "rows": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
