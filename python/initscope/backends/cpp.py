"""The compiled backend: ``initscope._core``, a fused C++ layer loop (sources in ``cpp/``).

Imported only when the ``cpp`` backend is asked for, so ``import initscope`` never loads the
extension.  The kernel links the OpenBLAS of the ``scipy-openblas32`` wheel; it is loaded
here first, with its symbols global, so the extension finds it whether it was installed
from a wheel or runs from a build tree.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from ..plan import Plan
from ..result import RawStats

__all__ = ["check_available", "run"]


@cache
def _load() -> ModuleType:
    """``initscope._core``, with OpenBLAS loaded before it (ImportError if either is missing)."""
    try:
        import scipy_openblas32
    except ImportError as exc:
        raise ImportError(
            "initscope._core needs the scipy-openblas32 package: pip install scipy-openblas32"
        ) from exc
    library = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(True))
    try:
        ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise ImportError(f"initscope._core cannot load OpenBLAS from {library}: {exc}") from exc
    from .. import _core

    return _core


def check_available() -> None:
    """Raise ImportError if the extension ``initscope._core`` cannot be imported."""
    _load()


def _layer_args(plan: Plan) -> list[dict[str, Any]]:
    layers = []
    for layer in plan.layers:
        args: dict[str, Any] = {
            "fan_in": layer.fan_in,
            "fan_out": layer.fan_out,
            "activation": layer.activation.code,
            "param": layer.activation.param,
            "saturation": layer.activation.saturation,
            "bias_std": layer.bias_std,
            "weights": None,
            "scale": 1.0,
            "shift": 0.0,
        }
        dist = layer.distribution
        if layer.weights is not None or dist is None:
            if layer.weights is None:
                raise ValueError(f"{layer.scheme.name} layer has no weights: call with_weights")
            args["source"] = "given"
            args["weights"] = np.ascontiguousarray(layer.weights, dtype=plan.dtype)
        elif dist.kind == "normal":  # schemes.draw: z * std + mean
            args.update(source="normal", scale=dist.b, shift=dist.a)
        else:  # u * (b - a) + a
            args.update(source="uniform", scale=dist.b - dist.a, shift=dist.a)
        layers.append(args)
    return layers


def run(plan: Plan) -> RawStats:
    """Propagate ``plan`` in C++ and return its raw accumulators."""
    core = _load()
    raw = core.propagate(
        n_samples=plan.n_samples,
        input_dim=plan.input_dim,
        seed=plan.seed,
        dtype=plan.dtype.name,
        inputs=plan.inputs,
        layers=_layer_args(plan),
        bins=plan.bins,
        hist_low=plan.hist_range[0],
        hist_high=plan.hist_range[1],
        threads=plan.threads,
        chunk_size=plan.chunk_size,
        keep_activations=plan.keep_activations,
    )
    return RawStats(**raw)
