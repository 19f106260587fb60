"""The benchmark suite: initscope against the code its users would write themselves.

``python bench/run.py [--quick] [--out PATH]`` times, alternating round by round, every
initscope backend and the baselines of :mod:`variants` on the classic experiment, measures
peak memory in fresh subprocesses (:mod:`memory`), checks every network's results while timing
(:mod:`timing`), and writes JSON and a markdown table (:mod:`report`), with the performance
targets (:mod:`targets`) and the machine (:mod:`machine`).  It times the installed initscope
(``pip install --no-build-isolation .`` after changing the sources).  Without ``--out`` the
results go to ``bench/results/<machine>.json`` (``<machine>-quick.json`` with ``--quick``).
The fair command leaves OpenBLAS at its native kernels::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py --out bench/results/NAME.json

Exits with 1 when a result check failed, 0 otherwise: targets not met are reported only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

import initscope
import machine
import report
import targets
from memory import max_rss_bytes, measure_memory
from timing import Config, time_until_quiet
from variants import (
    BASELINES,
    DTYPES,
    Shape,
    flops,
    have_torch,
    label,
    make_runner,
    select_variants,
    shape_text,
)

HERE = os.path.dirname(os.path.abspath(__file__))

#: (n_samples, width, depth) of the full suite: the seed experiment first.
FULL_SHAPES: list[Shape] = [
    (1000, 500, 10),
    (100, 500, 10),
    (1000, 2048, 10),
    (4096, 4096, 4),
    (100000, 256, 4),
]
#: The ``--quick`` suite: the seed experiment, a small batch and one width >= 1024.
QUICK_SHAPES: list[Shape] = [(1000, 500, 10), (100, 500, 10), (1000, 1024, 4)]


def _split_backends(backends: Sequence[str] | None, notes: list[str]) -> list[str]:
    """The backends to time, contenders first; the NumPy reference last, if it is timed.

    The reference is timed beside faster backends where small enough, but it is never the
    contender of the ratios unless it is the only backend.
    """
    available = initscope.available_backends()  # loads the compiled backend and its BLAS
    if backends is None:
        return [b for b in available if b != "numpy"] + (["numpy"] if "numpy" in available else [])
    chosen = []
    for backend in backends:
        if backend in available:
            chosen.append(backend)
        else:
            notes.append(f"initscope {backend} skipped: backend not available here")
    return sorted(chosen, key=lambda b: b == "numpy")


def run_suite(
    shapes: Sequence[Shape],
    dtypes: Sequence[str] = DTYPES,
    backends: Sequence[str] | None = None,
    baselines: Sequence[str] = BASELINES,
    repeat: int | None = None,
    quick: bool = False,
    memory: bool = True,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the suite and return its report, ready for JSON (render it with ``report.markdown``).

    Parameters
    ----------
    shapes
        ``(n_samples, width, depth)`` of every configuration.
    dtypes, backends, baselines
        What to time; ``backends=None`` means every available initscope backend.
    repeat
        Timed rounds per configuration; None: 3 to 15, by time.
    quick
        Shorter batches and pauses, one attempt per configuration, the memory target at
        depth 1 and no peak RSS of the configurations.
    memory
        Measure peak RSS in fresh subprocesses.
    command
        The command line, recorded in the metadata.
    log
        Where progress goes.
    """
    from initscope.backends import resolve
    from initscope.plan import make_plan

    warnings = machine.openblas_warnings()
    for warning in warnings:
        log("!" * 78 + f"\n!! WARNING: {warning}\n" + "!" * 78)
    load_start = machine.load_average()
    if load_start and load_start[0] > 0.5:
        log(f"note: load average {load_start[0]:.2f}: the machine is busy, timings may be noisy")

    notes: list[str] = []
    timed = _split_backends(backends, notes)
    contenders = [b for b in timed if b != "numpy"] or timed
    for backend in timed:
        resolve(backend)
    torch_available = "torch" in baselines and have_torch()

    configs: list[Config] = []
    for shape in shapes:
        for dtype in dtypes:
            config_notes = list(notes)
            kinds = select_variants(shape, dtype, timed, baselines, quick, torch_available,
                                    config_notes)  # fmt: skip
            log(f"{shape_text(shape)} {dtype}: {', '.join(label(k) for k in kinds)}")
            runners = {kind: make_runner(kind, shape, dtype) for kind in kinds}
            config = time_until_quiet(shape, dtype, kinds, runners, config_notes, repeat,
                                      quick, log)  # fmt: skip
            del runners  # frees the baselines' buffers before the next shape
            for kind in kinds:
                check = config.checks.get(kind)
                wrong = "" if not check or check["ok"] else "; ".join(check["problems"])
                log(f"  {label(kind):26s} {report.fmt_ms(config.median(kind)):>8s} ms  {wrong}")
            configs.append(config)

    memory_results: dict[str, Any] = {}
    if memory:
        log("peak memory, one fresh process per configuration:")
        for config in [] if quick else configs:  # --quick: the memory target only
            for kind in config.kinds:
                config.memory[kind] = measure_memory(kind, config.shape, config.dtype)
                log(f"  {shape_text(config.shape)} {config.dtype} {label(kind)}: "
                    f"{report.fmt_mb(config.memory[kind])} MB")  # fmt: skip
        target_shape = targets.QUICK_MEMORY_SHAPE if quick else targets.MEMORY_SHAPE
        for backend in contenders:
            for dtype in ("float64",) if quick else DTYPES:
                if dtype not in dtypes:
                    continue
                kind = f"initscope:{backend}"
                entry = measure_memory(kind, target_shape, dtype)
                entry["shape"] = list(target_shape)
                if "seconds" in entry:
                    entry["gflops"] = flops(target_shape) / entry["seconds"] / 1e9
                memory_results[f"{kind}|{dtype}"] = entry
                log(f"  memory target {shape_text(target_shape)} {dtype} {label(kind)}: "
                    f"{report.fmt_mb(entry)} MB")  # fmt: skip

    metadata = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "initscope_version": initscope.__version__,
        "initscope_file": initscope.__file__,
        "initscope_extension": machine.extension_info(),
        "git_commit": machine.git_commit(),
        "available_backends": initscope.available_backends(),
        "initscope_threads": make_plan([1], n_samples=1).threads,
        "cpu": machine.cpu_info(),
        "environment": machine.environment(),
        "blas": machine.blas_info(),
        "torch": machine.torch_info(),
        "loadavg_start": load_start,
        "loadavg_end": machine.load_average(),
        "main_process_peak_rss_bytes": max_rss_bytes(),
    }
    saved = [report.config_json(c, contenders) for c in configs]
    return {
        "machine": machine.machine_name(),
        "warnings": warnings,
        "metadata": metadata,
        "contenders": contenders,
        "configs": saved,
        "memory_target": memory_results,
        "results_ok": all(c.get("ok", True) for c in _checks(saved)),
        "targets": targets.evaluate(saved, contenders, memory_results),
    }


def _checks(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v["check"] for c in configs for v in c["variants"].values() if v["check"]]


def _parse_shapes(text: str) -> list[Shape]:
    shapes = []
    for part in text.split(","):
        try:
            n, w, depth = (int(v) for v in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"cannot read {part!r}; write n_samples x width x depth, "
                "e.g. 1000x500x10,100x500x10"
            ) from None
        if min(n, w, depth) < 1:
            raise argparse.ArgumentTypeError(f"{part!r} has a size below 1")
        shapes.append((n, w, depth))
    return shapes


def _parse_list(choices: Sequence[str] | None) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if choices is not None and (bad := [item for item in items if item not in choices]):
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(choices)}")
        return items

    return parse


def parser() -> argparse.ArgumentParser:
    """The options of ``bench/run.py``."""
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Time initscope against the seed's NumPy, the best plain NumPy, PyTorch "
        "and the GEMM alone; write JSON and a markdown table. Fair command: "
        f"{machine.FAIR_COMMAND}",
    )
    p.add_argument("--quick", action="store_true", help="small shapes, about a minute")
    p.add_argument("--out", metavar="PATH",
                   help="JSON results file (default: bench/results/<machine>[-quick].json); "
                   "the table goes to PATH with .md")  # fmt: skip
    p.add_argument("--shapes", type=_parse_shapes, metavar="NxWxL,...",
                   help="shapes to time instead of the defaults, e.g. 1000x500x10")  # fmt: skip
    p.add_argument("--backends", type=_parse_list(None), metavar="NAME,...",
                   help="initscope backends to time (default: every available one)")  # fmt: skip
    p.add_argument("--baselines", type=_parse_list(BASELINES), default=list(BASELINES),
                   metavar="NAME,...", help=f"baselines among {', '.join(BASELINES)}")  # fmt: skip
    p.add_argument("--dtypes", type=_parse_list(DTYPES), default=list(DTYPES), metavar="DTYPE,...")
    p.add_argument("--repeat", type=int, default=None, metavar="N",
                   help="timed rounds per shape (default: 3 to 15, by time)")  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    return p


def _command(argv: Sequence[str]) -> str:
    """The command line as it ran, with ``env -u`` when the OpenBLAS variables were unset."""
    command = " ".join([os.path.basename(sys.executable), sys.argv[0], *argv])
    if not any(name in os.environ for name in machine.OPENBLAS_SLOW_VARS):
        unset = " ".join(f"-u {name}" for name in machine.OPENBLAS_SLOW_VARS)
        command = f"env {unset} {command}"  # the variables were unset: that is the fair command
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite from the command line; 0 on success, 1 if a result was wrong."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser().error("--repeat must be at least 1")
    shapes = args.shapes or (QUICK_SHAPES if args.quick else FULL_SHAPES)
    out = args.out or os.path.join(
        HERE, "results", machine.machine_name() + ("-quick" if args.quick else "") + ".json"
    )
    results = run_suite(
        shapes,
        dtypes=args.dtypes,
        backends=args.backends,
        baselines=args.baselines,
        repeat=args.repeat,
        quick=args.quick,
        memory=not args.no_memory,
        command=_command(argv),
        log=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print(report.markdown(results))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    table = report.write(results, out)
    print(f"wrote {out} and {table}", file=sys.stderr)
    if not results["results_ok"]:
        print("some results were WRONG: see the check column", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
