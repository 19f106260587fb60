"""The invariance checks of ``invariance.py`` under each OpenBLAS kernel family the CPU runs.

OpenBLAS picks its kernels by CPU at load time, and kernels of different families round
differently (SkylakeX's small-matrix sgemm, Haswell's 24-row blocks, ...): a guarantee that
holds on one family may break on another.  ``OPENBLAS_CORETYPE`` makes OpenBLAS load the
kernels of a family the CPU supports, so one machine checks several: each family runs the
checks in a subprocess of its own, which also reports the core that really ran.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from conftest import COMPILED

HERE = os.path.dirname(os.path.abspath(__file__))

#: OpenBLAS core types, each with the CPU flags (of /proc/cpuinfo) its kernels need: the
#: families OpenBLAS's DYNAMIC_ARCH builds hold (Zen runs Haswell's kernels, Cooperlake
#: SkylakeX's, the oldest names fall back to a generic core).
FAMILIES = {
    "Nehalem": {"ssse3", "sse4_1", "sse4_2"},
    "Sandybridge": {"avx"},
    "Haswell": {"avx2", "fma"},
    "SkylakeX": {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"},
}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _runnable() -> dict[str, str | None]:
    """Each family, with None if it can run here, else why not."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return {name: "not an x86-64 machine" for name in FAMILIES}
    flags = _cpu_flags()
    if not flags:
        return {name: "no CPU flags in /proc/cpuinfo" for name in FAMILIES}
    return {
        name: None if need <= flags else f"the CPU lacks {', '.join(sorted(need - flags))}"
        for name, need in FAMILIES.items()
    }


RUNNABLE = _runnable()


def _run(family: str) -> dict:
    env = dict(os.environ, OPENBLAS_CORETYPE=family)
    env.pop("OPENBLAS_L2_SIZE", None)  # sized for the machine's own family, not this one
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, "invariance.py"), *COMPILED],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, f"{family}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    return {}


pytestmark = pytest.mark.skipif("cpp" not in COMPILED, reason="initscope._core is not built")


def test_at_least_two_families_run_on_any_x86_64_machine():
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("not an x86-64 machine")
    assert sum(why is None for why in RUNNABLE.values()) >= 2, RUNNABLE


@pytest.mark.parametrize("family", list(FAMILIES))
def test_results_do_not_depend_on_chunks_or_threads(family, reports):
    """Bit-identical for every chunk_size and thread count with this family's kernels, and
    equal to rounding to what the other families computed."""
    if RUNNABLE[family] is not None:
        pytest.skip(RUNNABLE[family])
    report = _run(family)
    assert report["core"].lower() == family.lower(), "OPENBLAS_CORETYPE was not honoured"
    for other in reports.values():
        for mine, theirs in zip(report["cases"], other["cases"], strict=True):
            for backend in COMPILED:
                np.testing.assert_allclose(
                    mine[f"{backend}_std"], theirs[f"{backend}_std"], rtol=2e-5
                )
    reports[family] = report
