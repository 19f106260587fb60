"""The portable build against the native one: is run-time dispatch as fast as -march=native?

``python bench/portable.py`` builds initscope twice from this checkout, with ``pip install
--target``: the default build (x86-64-v2 baseline, hot code per instruction set, chosen at
run time) into ``build/portable/site`` and ``INITSCOPE_NATIVE=ON`` (everything
``-march=native``, no dispatch) into ``build/native/site``.  It then times the classic
experiment (1000 samples, 10 tanh layers of 500 and of 2048 units, float64 and float32, the
cpp backend, default threads) in fresh subprocesses, alternating the two builds round by
round, checks that both give the same bits, and prints and saves (``bench/results/
portable-<machine>.json``) the medians and their ratio.  Timings share no core with another::

    flock /tmp/initscope-timing.lock env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python bench/portable.py

``--no-build`` reuses the builds already there.  The target: dispatched within 3 % of native.
``--instructions`` also counts the instructions of one run of each shape on one thread under
``valgrind --tool=callgrind``: a figure that, unlike a time, does not move with the load of
a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BUILDS = {
    "dispatched": [],
    "native": ["-Ccmake.define.INITSCOPE_NATIVE=ON"],
}
SHAPES = [(1000, 500, 10), (1000, 2048, 10)]  # samples, width, depth
DTYPES = ["float64", "float32"]
TARGET = 1.03  # dispatched / native

# Run in a fresh interpreter per build and round: one warm-up, then `repeats` timed runs.
WORKER = """
import hashlib, json, sys, time
import initscope
from initscope.backends.cpp import _load
_core = _load()  # OpenBLAS first, then the extension
n, width, depth, dtype, repeats, threads = sys.argv[1:]
run = lambda: initscope.propagate([int(width)] * int(depth), n_samples=int(n), dtype=dtype,
                                  backend="cpp", threads=int(threads) or None)
result = run()
times = []
for _ in range(int(repeats)):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
digest = hashlib.sha256(b"".join(getattr(result, f).tobytes() for f in ("mean", "std", "hist")))
print(json.dumps({"times": times, "isa": _core.build_info()["isa"], "file": _core.__file__,
                  "digest": digest.hexdigest()}))
"""


def build(name: str) -> Path:
    """Installs this checkout's build `name` into build/<name>/site; returns that directory."""
    site = ROOT / "build" / ("portable" if name == "dispatched" else name) / "site"
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade", "--quiet"]
    command += ["--target", str(site), f"-Cbuild-dir={site.parent / 'cmake'}", *BUILDS[name]]
    try:
        import pybind11  # noqa: F401
        import scikit_build_core  # noqa: F401
        import scipy_openblas32  # noqa: F401

        command.append("--no-build-isolation")
    except ImportError:
        pass
    subprocess.run([*command, str(ROOT)], check=True)
    shutil.copy(ROOT / ".ci" / "sitecustomize.py", site)  # this build, not an editable one
    return site


def measure(
    site: Path,
    shape: tuple[int, int, int],
    dtype: str,
    repeats: int,
    threads: int = 0,
    prefix: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One worker's timings of `shape` with the build in `site` (threads 0: the default),
    run behind the command `prefix` (a profiler) if given."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("INITSCOPE_ISA", None)
    args = [*map(str, shape), dtype, str(repeats), str(threads)]
    done = subprocess.run(
        [*prefix, sys.executable, "-c", WORKER, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout.splitlines()[-1])
    if not out["file"].startswith(str(site)):
        raise RuntimeError(f"the worker imported {out['file']}, not the build in {site}")
    return out


def instructions(site: Path, shape: tuple[int, int, int], dtype: str) -> int:
    """Instructions of one run of `shape` on one thread with the build in `site`: callgrind's
    count of a worker with two timed runs, less that of one with none."""
    counts = []
    for repeats in (0, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "callgrind.out"
            prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
            measure(site, shape, dtype, repeats, threads=1, prefix=prefix)
            summary = [line for line in out.read_text().splitlines() if line.startswith("summary:")]
            counts.append(int(summary[0].split()[1]))
    return (counts[1] - counts[0]) // 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds (default 7)")
    parser.add_argument("--no-build", action="store_true", help="reuse build/*/site")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/...)")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind too"
    )
    args = parser.parse_args(argv)

    sites = {}
    for name in BUILDS:
        site = ROOT / "build" / ("portable" if name == "dispatched" else name) / "site"
        sites[name] = site if args.no_build else build(name)
    rows = []
    failed = False
    for shape in SHAPES:
        repeats = 10 if shape[1] <= 500 else 3
        for dtype in DTYPES:
            times: dict[str, list[float]] = {name: [] for name in BUILDS}
            info: dict[str, dict[str, Any]] = {}
            for r in range(args.rounds):
                order = list(BUILDS) if r % 2 == 0 else list(reversed(BUILDS))
                for name in order:
                    out = measure(sites[name], shape, dtype, repeats)
                    times[name].append(min(out["times"]))  # the quietest run of the round
                    info[name] = out
            same = info["dispatched"]["digest"] == info["native"]["digest"]
            failed |= not same
            medians = {name: statistics.median(t) for name, t in times.items()}
            ratio = medians["dispatched"] / medians["native"]
            counted = (
                {name: instructions(sites[name], shape, dtype) for name in BUILDS}
                if args.instructions
                else None
            )
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "dtype": dtype,
                    "dispatched_isa": info["dispatched"]["isa"],
                    "native_isa": info["native"]["isa"],
                    "median_s": medians,
                    "rounds_s": times,
                    "ratio": ratio,
                    "within_target": ratio <= TARGET,
                    "same_results": same,
                    "instructions": counted,
                    "instruction_ratio": counted["dispatched"] / counted["native"]
                    if counted
                    else None,
                }
            )
            print(
                f"{rows[-1]['shape']:>14} {dtype:8} dispatched ({info['dispatched']['isa']}) "
                f"{medians['dispatched'] * 1e3:8.2f} ms   native {medians['native'] * 1e3:8.2f} ms"
                f"   ratio {ratio:.3f}{'' if same else '   RESULTS DIFFER'}"
                + (
                    f"   instructions {counted['dispatched']:.4g} / {counted['native']:.4g}"
                    f" = {counted['dispatched'] / counted['native']:.4f}"
                    if counted
                    else ""
                ),
                flush=True,
            )

    sys.path.insert(0, str(Path(__file__).parent))
    from machine import machine_name  # bench/machine.py

    out_path = args.out or ROOT / "bench" / "results" / f"portable-{machine_name()}.json"
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": len(os.sched_getaffinity(0)),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "rounds": args.rounds,
        "target_ratio": TARGET,
        "rows": rows,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"saved {out_path}")
    return 1 if failed else 0


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
