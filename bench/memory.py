"""Peak memory of one network of a variant, measured in a fresh interpreter.

:func:`measure_memory` runs this file as a script (``python bench/memory.py SPEC``) so that
the peak belongs to one configuration alone, with the imports and buffers a user would have.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from variants import Shape, make_runner


def rss_bytes() -> int:
    """Resident set size of this process now (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def max_rss_bytes() -> int:
    """Peak RSS of this process image (0 where the OS reports none).

    Linux's ``VmHWM`` is reset by exec; ``ru_maxrss`` is not, so in a child it would count
    the parent's memory at the fork: it is only the fallback for other POSIX systems.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not POSIX
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def probe(spec: str) -> None:
    """Run one network of a variant and print its peak RSS as JSON (the subprocess side)."""
    args = json.loads(spec)
    kind, shape, dtype = args["kind"], tuple(args["shape"]), args["dtype"]
    if kind.startswith("initscope:"):
        from initscope.backends import get_backend

        get_backend(kind.split(":", 1)[1])  # load the extension and its BLAS before measuring
    elif kind == "torch":
        import torch  # noqa: F401
    runner = make_runner(kind, shape, dtype)
    ready = rss_bytes()
    start = time.perf_counter()
    outcome = runner(1)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "rss_ready_bytes": ready,
                "peak_rss_bytes": max_rss_bytes(),
                "seconds": seconds,
                "std": None if outcome is None else outcome.std.tolist(),
            }
        )
    )


def measure_memory(kind: str, shape: Shape, dtype: str, timeout: float = 1800) -> dict[str, Any]:
    """Peak RSS of one network of ``kind`` at ``shape``, in a fresh interpreter.

    Returns the probe's JSON (``rss_ready_bytes``, ``peak_rss_bytes``, ``seconds``, ``std``)
    or ``{"error": ...}`` with the last line of its stderr.
    """
    spec = json.dumps({"kind": kind, "shape": list(shape), "dtype": dtype})
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), spec],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    probe(sys.argv[1])
