"""The compiled backend: ``initscope._core``, a fused C++ layer loop (sources in ``cpp/``).

Imported only when the ``cpp`` backend is asked for, so ``import initscope`` never loads the
extension.  The kernel links the OpenBLAS of the ``scipy-openblas32`` wheel; it is loaded
here first, with its symbols global, so the extension finds it whether it was installed
from a wheel or runs from a build tree.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from ..plan import Plan
from ..result import GradRaw, RawStats

if TYPE_CHECKING:
    from .. import _core

# Functions below call _load() first (OpenBLAS before the extension), then import _core by
# name, so that mypy checks their calls against _core.pyi.

__all__ = ["check_available", "estimate_memory", "run", "run_seeds"]


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


def _layer_specs(plan: Plan) -> list[_core.LayerSpec]:
    """The layers in kernel terms: drawn weights as ``value * scale + shift``, built or given
    matrices as arrays in the run's dtype.  A deep network repeats its drawn layers: each
    distinct one is built once (the kernel copies every entry of the list)."""
    _load()
    from .. import _core

    specs = []
    drawn: dict[tuple, _core.LayerSpec] = {}
    for layer in plan.layers:
        dist, act = layer.distribution, layer.activation
        key = None
        if layer.weights is not None or dist is None:
            if layer.weights is None:
                raise ValueError(f"{layer.scheme.name} layer has no weights: call with_weights")
            source = _core.WeightSource.given
            weights = np.ascontiguousarray(layer.weights, dtype=plan.dtype)
            scale, shift = 1.0, 0.0
        else:
            source = (
                _core.WeightSource.normal if dist.kind == "normal" else _core.WeightSource.uniform
            )
            weights = None
            scale, shift = dist.affine()
            key = (layer.fan_in, layer.fan_out, act.code, act.param, act.saturation, source,
                   scale, shift, layer.bias_std)  # fmt: skip
            if key in drawn:
                specs.append(drawn[key])
                continue
        spec = _core.LayerSpec(
            fan_in=layer.fan_in,
            fan_out=layer.fan_out,
            activation=act.code,
            param=act.param,
            saturation=act.saturation,
            source=source,
            scale=scale,
            shift=shift,
            weights=weights,
            bias_std=layer.bias_std,
        )
        if key is not None:
            drawn[key] = spec
        specs.append(spec)
    return specs


def run(plan: Plan) -> RawStats:
    """Propagate ``plan`` in C++ and return its raw accumulators."""
    return run_seeds(plan, [plan.seed])[0]


def run_seeds(plan: Plan, seeds: Sequence[int]) -> list[RawStats]:
    """:func:`run` of ``plan`` with each seed of ``seeds`` in turn (built weights, if the
    plan has any, are the same for all): the arguments are converted once, in one call to
    the kernel, which is what a sweep's many small runs of one network need."""
    _load()
    from .. import _core

    raws = _core.propagate(
        n_samples=plan.n_samples,
        input_dim=plan.input_dim,
        seeds=list(seeds),
        dtype=plan.dtype.name,
        inputs=plan.inputs,
        layers=_layer_specs(plan),
        bins=plan.bins,
        hist_low=plan.hist_range[0],
        hist_high=plan.hist_range[1],
        threads=plan.threads,
        chunk_size=plan.chunk_size,
        keep_activations=plan.keep_activations,
        gradients=plan.gradients,
        output_grad=plan.output_grad,
        grad_bins=plan.grad_bins,
        grad_range=plan.grad_range,
    )
    return [_raw_stats(raw) for raw in raws]


def _raw_stats(raw: _core.RawStats) -> RawStats:
    grads = raw.grads
    return RawStats(
        unit_mean=raw.unit_mean,
        unit_m2=raw.unit_m2,
        pre_unit_mean=raw.pre_unit_mean,
        pre_unit_m2=raw.pre_unit_m2,
        min=raw.min,
        max=raw.max,
        hist=raw.hist,
        below=raw.below,
        above=raw.above,
        zeros=raw.zeros,
        saturated=raw.saturated,
        nonfinite=raw.nonfinite,
        pre_nonfinite=raw.pre_nonfinite,
        activations=raw.activations,
        deriv_sq_sum=raw.deriv_sq_sum,
        grads=None
        if grads is None
        else GradRaw(
            unit_mean=grads.unit_mean,
            unit_m2=grads.unit_m2,
            min=grads.min,
            max=grads.max,
            hist=grads.hist,
            below=grads.below,
            above=grads.above,
            nonfinite=grads.nonfinite,
            hist_range=grads.hist_range,
            weight_grad_std=grads.weight_grad_std,
            weight_grad_norm=grads.weight_grad_norm,
            weight_std=grads.weight_std,
        ),
    )


def estimate_memory(plan: Plan) -> int:
    """Bytes :func:`run` needs: two chunk buffers of the widest layer in the run's dtype (with
    gradients, what the backward pass keeps per chunk and the weight gradients instead,
    :meth:`Plan.gradient_bytes`, and every thread's tile of ``delta @ W.T``), the weights as
    the kernel keeps them, every thread's histogram copies and the kept activations."""
    _load()
    from .. import _core

    item = plan.dtype.itemsize
    width = max(plan.input_dim, *plan.widths)
    copies = plan.threads * _core.HIST_COPIES * 8
    hist = (plan.bins + 3) * copies
    if plan.gradients:
        hist += (plan.grad_bins + 3) * copies
        buffers = plan.gradient_bytes() + plan.threads * _core.TILE_ROWS * width * item
    else:
        buffers = 2 * min(plan.chunk_size, plan.n_samples) * width * item
    return buffers + plan.weight_bytes(_core.WEIGHT_CACHE_BYTES) + hist + plan.kept_bytes()
