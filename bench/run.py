"""Run the benchmark suite of this checkout: ``python bench/run.py [--quick] [--out PATH]``.

The suite is ``initscope.benchmark`` (``initscope bench`` runs the installed copy); this script
loads ``python/initscope/benchmark.py`` from the checkout it sits in, and times the installed
initscope (``pip install --no-build-isolation .`` after changing the sources).  Without
``--out`` the results go to ``bench/results/<machine>.json`` (``<machine>-quick.json`` with
``--quick``) and the markdown table next to it.  The fair command leaves OpenBLAS at its
native kernels::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py --out bench/results/NAME.json
"""

from __future__ import annotations

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, os.pardir, "python", "initscope", "benchmark.py")


def load_suite():
    """``initscope.benchmark`` from this checkout (it imports the installed initscope)."""
    spec = importlib.util.spec_from_file_location("initscope_bench_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    suite = load_suite()
    argv = sys.argv[1:]
    if not any(arg == "--out" or arg.startswith("--out=") for arg in argv):
        name = suite.machine_name() + ("-quick" if "--quick" in argv else "")
        argv += ["--out", os.path.join(HERE, "results", f"{name}.json")]
    return suite.main(argv)


if __name__ == "__main__":
    sys.exit(main())
