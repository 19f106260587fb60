"""The performance targets initscope holds itself to, and how a run measures up to them.

Ratios, not times: a ratio to code timed in the same process, on the same machine and in the
same minutes, holds across machines far better than milliseconds do.  Targets not met are
reported, never failed: only a wrong result fails the suite.
"""

from __future__ import annotations

from typing import Any

from variants import DTYPES, LABELS, Shape, label, shape_text

#: The seed experiment, where initscope is compared with the code it replaces.
SEED_SHAPE: Shape = (1000, 500, 10)
#: Speed-up of initscope over each baseline on :data:`SEED_SHAPE` (the baseline's time per
#: network / initscope's), by dtype.  ``best_any``: the faster of the two best-NumPy variants.
SPEEDUP: dict[str, tuple[tuple[str, float], ...]] = {
    "float64": (("seed", 3.8), ("best", 2.2), ("torch", 3.5)),
    "float32": (("torch", 3.0), ("best_any", 1.8)),
}
#: From this width on the GEMMs dominate: initscope's rate, as a fraction of the GEMM alone's.
GEMM_MIN_WIDTH = 1024
GEMM_FRACTION = 0.95
#: Narrower shapes: initscope's time per network at most this multiple of the GEMM alone's
#: (histograms and every statistic included), by dtype.
GEMM_RATIO: dict[Shape, dict[str, float]] = {
    SEED_SHAPE: {"float64": 1.10, "float32": 1.15},
    (100, 500, 10): {"float64": 2.0, "float32": 2.0},  # drawing the weights dominates
    (100_000, 256, 4): {"float64": 1.25, "float32": 1.4},  # the O(n·w) work per element
}
#: The Numba backend's time per network at most this multiple of the C++ kernel's, at every shape.
NUMBA_RATIO = 1.3
#: Peak RSS of one network of this shape stays under MEMORY_BYTES (initscope streams chunks).
MEMORY_SHAPE: Shape = (2_000_000, 256, 4)
MEMORY_BYTES = 200e6
#: ``--quick`` checks the memory target at depth 1: initscope's memory does not grow with depth.
QUICK_MEMORY_SHAPE: Shape = (2_000_000, 256, 1)


def config_shape(config: dict[str, Any]) -> Shape:
    """``(n_samples, width, depth)`` of a saved configuration."""
    shape = config["shape"]
    return (shape["n_samples"], shape["width"], shape["depth"])


def median(config: dict[str, Any] | None, kind: str) -> float | None:
    """Median seconds per network of ``kind`` in a saved configuration; None if not timed."""
    if config is None:
        return None
    return config["variants"].get(kind, {}).get("median_s")


def _fastest_best_numpy(config: dict[str, Any]) -> tuple[str, float] | None:
    timed = [(kind, t) for kind in ("best", "best_mt") if (t := median(config, kind))]
    return min(timed, key=lambda item: item[1]) if timed else None


def evaluate(
    configs: list[dict[str, Any]], contenders: list[str], memory: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per (target, initscope backend): what was measured, what is required, status.

    Parameters
    ----------
    configs
        The saved configurations (``report["configs"]``).
    contenders
        The initscope backends the targets are about.
    memory
        The memory-target entries (``report["memory_target"]``), keyed ``"initscope:cpp|float64"``.
    """
    rows: list[dict[str, Any]] = []
    by_key = {(config_shape(c), c["dtype"]): c for c in configs}

    def add(target: str, backend: str, measured: float | None, required: float, unit: str,
            larger_is_better: bool = True, note: str = "") -> None:  # fmt: skip
        if measured is None:
            status = "not measured"
        elif larger_is_better:
            status = "met" if measured >= required else "NOT MET"
        else:
            status = "met" if measured <= required else "NOT MET"
        rows.append(
            {"target": target, "backend": backend, "measured": measured, "required": required,
             "unit": unit, "larger_is_better": larger_is_better, "status": status, "note": note}
        )  # fmt: skip

    for backend in contenders:
        kind = f"initscope:{backend}"
        for dtype, wanted in SPEEDUP.items():
            config = by_key.get((SEED_SHAPE, dtype))
            mine = median(config, kind)
            for base, required in wanted:
                note = ""
                if config is None or mine is None:
                    other = None
                elif base == "best_any":
                    fastest = _fastest_best_numpy(config)
                    other = fastest[1] if fastest else None
                    note = f"fastest is {label(fastest[0])}" if fastest else ""
                else:
                    other = median(config, base)
                ratio = other / mine if other and mine else None
                name = label(base) if base in LABELS else "best NumPy (fastest variant)"
                add(f"seed experiment {dtype}: speed-up vs {name}", backend, ratio, required,
                    "×", note=note)  # fmt: skip
        for config in configs:
            shape, dtype = config_shape(config), config["dtype"]
            mine, gemm = median(config, kind), median(config, "gemm")
            if shape[1] >= GEMM_MIN_WIDTH:
                add(f"{shape_text(shape)} {dtype}: GFLOP/s vs GEMM alone", backend,
                    gemm / mine if mine and gemm else None, GEMM_FRACTION, "of GEMM")  # fmt: skip
            elif dtype in GEMM_RATIO.get(shape, {}):
                add(f"{shape_text(shape)} {dtype}: time vs GEMM alone", backend,
                    mine / gemm if mine and gemm else None, GEMM_RATIO[shape][dtype], "×",
                    larger_is_better=False)  # fmt: skip
            if backend == "numba":
                cpp = median(config, "initscope:cpp")
                add(f"{shape_text(shape)} {dtype}: time vs initscope cpp", backend,
                    mine / cpp if mine and cpp else None, NUMBA_RATIO, "×",
                    larger_is_better=False)  # fmt: skip
        for dtype in DTYPES:
            entry = memory.get(f"{kind}|{dtype}")
            if entry is None:
                continue
            shape = tuple(entry["shape"])
            peak = entry.get("peak_rss_bytes")
            note = "" if shape == MEMORY_SHAPE else "quick mode: depth 1 stands for depth 4"
            if "error" in entry:
                note = entry["error"]
            add(f"{shape_text(shape)} {dtype}: peak RSS", backend,
                peak / 1e6 if peak else None, MEMORY_BYTES / 1e6, "MB",
                larger_is_better=False, note=note)  # fmt: skip
    return rows
