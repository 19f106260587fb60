"""What must not depend on how a run is cut up: the same network gives bit-identical results
for every ``chunk_size`` and every thread count, on every backend but the reference.

This holds on any BLAS kernel because every GEMM call covers one tile of samples (four for
a wide layer) and, in layers of 2048 units or more or with few samples, one block of
columns, whose shape depends on ``n_samples`` and the network alone
(``initscope.plan.TILE_ROWS``, ``chunk_multiple``), never on the chunk or the threads.  The
checks are plain functions, so that ``test_backends.py`` runs them in-process
and ``test_kernel_families.py`` runs this file as a script under each OpenBLAS core type:

    OPENBLAS_CORETYPE=Sandybridge python tests/invariance.py cpp numba

prints one JSON line: the OpenBLAS core that ran and a digest of every case's results.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import numpy as np

import initscope

#: Every per-layer array of a result, all of which must be bit-identical.
FIELDS = (*initscope.PropagationResult.LAYER_FIELDS, "hist")
#: ... and those of a run with gradients.
GRAD_FIELDS = (*initscope.PropagationResult.GRAD_FIELDS, "grad_hist", "grad_range")

#: Shapes where kernels differ: float32 edge rows of a register block (65 units, 193 and
#: 1000 samples: partial tiles), a deep stack with biases, a layer wider than it is deep, and
#: a wide layer (2048 x 4096 weights: four tiles per GEMM call, the last group short) after a
#: narrower one, and layers with few samples (two tiles) in blocks of columns, with gradients.
CASES: tuple[dict[str, Any], ...] = (
    dict(widths=[65], n_samples=193, activation="linear", dtype="float32", init="glorot_normal"),
    dict(widths=[65, 33], n_samples=1000, activation="tanh", dtype="float32", bias=0.3),
    dict(widths=[130, 130, 7], n_samples=721, activation="relu", dtype="float64", bias=0.1),
    dict(widths=[300, 200], n_samples=1500, activation="gelu", dtype="float32"),
    dict(widths=[2048, 4096], input_dim=2048, n_samples=1201, dtype="float32"),
    dict(widths=[520, 260], n_samples=300, dtype="float32", bias=0.2, gradients=True),
)
#: (chunk_size, threads) of the runs compared with the first.
SPLITS = ((None, 1), (1, 2), (241, 3), (480, 2), (10**6, 8))


def results_for_every_split(backend: str, case: dict[str, Any]) -> list[Any]:
    """The case run on ``backend`` once per split of :data:`SPLITS`."""
    return [
        initscope.propagate(backend=backend, chunk_size=chunk, threads=threads, **case)
        for chunk, threads in SPLITS
    ]


def assert_identical(results: list[Any]) -> None:
    """Every result bit for bit the first (NaN equal to NaN)."""
    first = results[0]
    names = FIELDS + (GRAD_FIELDS if first.has_gradients else ())
    for other in results[1:]:
        for name in names:
            np.testing.assert_array_equal(getattr(other, name), getattr(first, name), name)


def digest(result: Any) -> str:
    """A hash of every per-layer array of ``result``."""
    h = hashlib.sha256()
    for name in FIELDS:
        h.update(np.ascontiguousarray(getattr(result, name)).tobytes())
    return h.hexdigest()[:16]


def main(backends: list[str]) -> int:
    """Check every case on ``backends``; print the core OpenBLAS ran and the digests."""
    from initscope.backends.cpp import _load

    report: dict[str, Any] = {"core": _load().blas_info()["openblas_corename"], "cases": []}
    for case in CASES:
        entry: dict[str, Any] = {}
        for backend in backends:
            results = results_for_every_split(backend, case)
            assert_identical(results)
            entry[backend] = digest(results[0])
            entry[f"{backend}_std"] = results[0].std.tolist()
        report["cases"].append(entry)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["cpp"]))
