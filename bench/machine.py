"""The machine a benchmark ran on: CPU, BLAS and OpenMP runtimes, torch, the build, the load.

Everything here only reads: ``/proc`` on Linux (elsewhere the fields are left out), git, and
threadpoolctl when it is installed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from typing import Any

#: Variables that force OpenBLAS away from the kernels and cache size it detects.
OPENBLAS_SLOW_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Variables recorded with every run: they change what the libraries do.
ENV_VARS = (
    *OPENBLAS_SLOW_VARS,
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GOMP_SPINCOUNT",
    "INITSCOPE_BACKEND",
)
FAIR_COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py"


def openblas_warnings() -> list[str]:
    """One warning per variable of :data:`OPENBLAS_SLOW_VARS` set in the environment."""
    return [
        f"{name}={os.environ[name]} is set: it forces OpenBLAS kernels that can be much "
        f"slower than the native ones. The fair command is `{FAIR_COMMAND}`."
        for name in OPENBLAS_SLOW_VARS
        if os.environ.get(name)
    ]


def environment() -> dict[str, str | None]:
    """The values of :data:`ENV_VARS` (None where unset)."""
    return {name: os.environ.get(name) for name in ENV_VARS}


def cpu_info() -> dict[str, Any]:
    """CPU model, SIMD flags, usable CPUs and whether this is a virtual machine."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "os_cpu_count": os.cpu_count(),
    }
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return info
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first CPU's block is enough: they are alike
            continue
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    info.update(
        model_name=fields.get("model name"),
        vendor=fields.get("vendor_id"),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        simd=sorted(f for f in flags if f in {"avx", "avx2", "fma"} or f.startswith("avx512")),
        hypervisor="hypervisor" in flags,
    )
    return info


def blas_info() -> list[dict[str, Any]] | str:
    """threadpoolctl's view of every BLAS and OpenMP runtime loaded in this process."""
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl is not installed (pip install threadpoolctl): BLAS unknown"
    keys = (
        "user_api", "internal_api", "prefix", "version", "architecture", "corename",
        "threading_layer", "num_threads", "filepath",
    )  # fmt: skip
    return [{k: pool[k] for k in keys if k in pool} for pool in threadpoolctl.threadpool_info()]


def torch_info() -> dict[str, Any] | None:
    """torch's version, threads and BLAS, if a variant has imported it."""
    if "torch" not in sys.modules:
        return None
    torch = sys.modules["torch"]
    config = torch.__config__.show()
    lines = [ln.strip() for ln in config.splitlines()]
    return {
        "version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "blas": next((ln.lstrip("- ") for ln in lines if "Math Kernel" in ln), None),
        "cpu_capability": next((ln for ln in lines if "CPU capability" in ln), None),
    }


def git_commit() -> str | None:
    """The checkout's short commit, with ``+dirty`` when tracked files are modified."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def extension_info() -> dict[str, Any] | None:
    """Where the compiled ``initscope._core`` lives and when it was built."""
    import importlib.util

    spec = importlib.util.find_spec("initscope._core")
    if spec is None or not spec.origin:
        return None
    stat = os.stat(spec.origin)
    built = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds")
    return {"path": spec.origin, "built": built, "bytes": stat.st_size}


def machine_name() -> str:
    """A short name of this machine kind for results files: ``amd-epyc-2cpu``."""
    cpu = cpu_info()
    model = str(cpu.get("model_name") or cpu.get("processor") or platform.machine())
    words = [w for w in "".join(c if c.isalnum() else " " for c in model.lower()).split()]
    words = [w for w in words if w not in {"r", "tm", "processor", "cpu", "core"}][:4]
    return "-".join([*words, f"{cpu.get('usable_cpus', os.cpu_count())}cpu"])


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded; None where the OS has none."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(v, 2) for v in os.getloadavg()]


class CpuMonitor:
    """CPU time the rest of the machine took while we timed (from /proc/stat, Linux only)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float] | None:
        try:
            with open("/proc/stat") as handle:
                values = [int(v) for v in handle.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        steal = values[7] if len(values) > 7 else 0
        own = os.times()
        return (
            (sum(values[:8]) - idle - steal) / tick,
            steal / tick,
            own.user + own.system,
            time.perf_counter(),
        )

    def stop(self) -> dict[str, float] | None:
        """Wall time, our CPU time, the others' CPU time and their share of all CPUs."""
        end = self._sample()
        if end is None or self.start is None:
            return None
        busy, steal, own, wall = (b - a for a, b in zip(self.start, end, strict=True))
        cpus = os.cpu_count() or 1
        return {
            "wall_s": wall,
            "own_cpu_s": own,
            "other_cpu_s": max(busy - own, 0.0),
            "other_share": max(busy - own, 0.0) / (wall * cpus) if wall > 0 else 0.0,
            "steal_share": steal / (wall * cpus) if wall > 0 else 0.0,
        }
