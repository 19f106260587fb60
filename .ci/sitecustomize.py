"""Copied next to a package installed with ``pip install --target`` (first on PYTHONPATH) by
.ci/sanitize, .ci/portable and bench/portable.py, so that Python imports that package: an
editable install's import hook (scikit-build-core's) runs before PYTHONPATH is searched and
would import the editable one. Subprocesses inherit PYTHONPATH, and so this file."""

import sys

sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "ScikitBuildRedirectingFinder"]
