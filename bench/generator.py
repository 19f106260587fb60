"""The generator alone: nanoseconds and instructions per value of the compiled generator.

``python bench/generator.py`` times ``initscope._core.testing.normal`` and ``.uniform``
(float64 and float32, one thread: the C++ ``generate`` the layer loop calls to draw
weights) in fresh subprocesses, round by round, and prints and saves (``bench/results/
generator-<machine>.json``) the median nanoseconds per value.  Each worker checks a slice with
an odd start against :mod:`initscope.random`, bit for bit, before it times.  ``--baseline
DIR`` times another build side by side, alternating with this one round by round (``DIR``
holds an ``initscope`` package with its ``_core``), and reports the ratios.  This build is the
one in ``python/initscope`` of this checkout.  Timings share no
core with another::

    flock /tmp/initscope-timing.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python bench/generator.py --baseline /tmp/gen-base-site --instructions

``--instructions`` also counts the instructions per value under ``valgrind --tool=callgrind``
(collected inside the kernel's ``generate`` only): a figure that, unlike a time, does not
move with the load of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CASES = [(dtype, kind) for dtype in ("float64", "float32") for kind in ("normal", "uniform")]
COUNT = 1 << 16  # values per call: 512 KiB of float64, reused by the allocator call after call

# One worker per build and round: check, warm up, then `rounds` timings of `calls` calls.
WORKER = """
import json, sys, time
import numpy as np
import initscope
from initscope import random as spec
from initscope.backends.cpp import _load
_core = _load()  # OpenBLAS first, then the extension
count, rounds, calls = map(int, sys.argv[1:4])
cases = [c.split(":") for c in sys.argv[4].split(",")]
out = {"file": _core.__file__, "isa": _core.build_info()["isa"], "ns": {}, "identical": {}}
for dtype, kind in cases:
    draw = getattr(_core.testing, kind)
    got = draw(11, 1, 2, 12345, 1001, dtype)
    want = getattr(spec, kind)(11, 1, 2, 12345, 1001, dtype)
    bits = np.uint64 if dtype == "float64" else np.uint32
    out["identical"][dtype + " " + kind] = bool(np.array_equal(got.view(bits), want.view(bits)))
    draw(1, 1, 0, 0, count, dtype)
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        for i in range(calls):
            draw(1, 1, 0, (r * calls + i) * count, count, dtype)
        times.append((time.perf_counter() - start) / (calls * count) * 1e9)
    out["ns"][dtype + " " + kind] = times
print(json.dumps(out))
"""

# Under callgrind: one call of `count` values, collected inside the kernel's generate only.
COUNT_WORKER = """
import sys
from initscope.backends.cpp import _load
_core = _load()
getattr(_core.testing, sys.argv[2])(1, 1, 0, 0, int(sys.argv[3]), sys.argv[1])
"""


def _env(site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env.pop("INITSCOPE_ISA", None)
    return env


def measure(site: Path | None, rounds: int, calls: int) -> dict[str, Any]:
    """One worker's timings of every case with the build in `site` (None: the importable one)."""
    cases = ",".join(f"{d}:{k}" for d, k in CASES)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(COUNT), str(rounds), str(calls), cases],
        env=_env(site),
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if site is not None and not out["file"].startswith(str(site)):
        raise RuntimeError(f"the worker imported {out['file']}, not the build in {site}")
    return out


def instructions(site: Path | None, dtype: str, kind: str, count: int) -> float:
    """Instructions per value of one draw of `count` values, callgrind's count inside
    ``generate_plain`` (the kernel's generate entry point) alone."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += ["--toggle-collect=*generate_plain*", sys.executable, "-c", COUNT_WORKER]
        subprocess.run(
            [*command, dtype, kind, str(count)],
            env=_env(site),
            capture_output=True,
            check=True,
        )
        summary = [line for line in out.read_text().splitlines() if line.startswith("summary:")]
        return int(summary[0].split()[1]) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="a directory holding another initscope")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--calls", type=int, default=40, help="calls per timing (default 40)")
    parser.add_argument("--instructions", action="store_true", help="callgrind counts too")
    parser.add_argument("--count-values", type=int, default=1 << 18, help="values per count")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/...)")
    args = parser.parse_args(argv)

    builds: dict[str, Path | None] = {"this": ROOT / "python"}  # this checkout's build
    if args.baseline is not None:
        builds["baseline"] = args.baseline.resolve()
    times: dict[str, dict[str, list[float]]] = {b: {} for b in builds}
    info: dict[str, dict[str, Any]] = {}
    for r in range(args.rounds):
        for name in builds if r % 2 == 0 else reversed(builds):
            out = measure(builds[name], rounds=3, calls=args.calls)
            info[name] = out
            for case, ns in out["ns"].items():
                times[name].setdefault(case, []).append(min(ns))  # the quietest of the round
    failed = any(not ok for out in info.values() for ok in out["identical"].values())

    rows = []
    for dtype, kind in CASES:
        case = f"{dtype} {kind}"
        row: dict[str, Any] = {"case": case}
        for name in builds:
            row[name] = {
                "isa": info[name]["isa"],
                "ns_per_value": statistics.median(times[name][case]),
                "rounds_ns": times[name][case],
                "identical_to_spec": info[name]["identical"][case],
            }
            if args.instructions:
                row[name]["instructions_per_value"] = instructions(
                    builds[name], dtype, kind, args.count_values
                )
        if "baseline" in builds:
            row["ratio"] = row["this"]["ns_per_value"] / row["baseline"]["ns_per_value"]
        rows.append(row)
        text = f"{case:16}"
        for name in builds:
            r_ = row[name]
            text += f"  {name} ({r_['isa']}) {r_['ns_per_value']:6.3f} ns"
            if args.instructions:
                text += f" {r_['instructions_per_value']:6.2f} instr"
            text += "" if r_["identical_to_spec"] else " NOT THE SPECIFICATION'S BITS"
        if "ratio" in row:
            text += f"   ratio {row['ratio']:.3f}"
        print(text, flush=True)

    sys.path.insert(0, str(Path(__file__).parent))
    from machine import cpu_info, machine_name  # bench/machine.py

    out_path = args.out or ROOT / "bench" / "results" / f"generator-{machine_name()}.json"
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": cpu_info().get("model_name"),
        "values_per_call": COUNT,
        "rounds": args.rounds,
        "calls": args.calls,
        "baseline": str(builds.get("baseline")),
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {out_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
