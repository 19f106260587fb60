"""The NumPy reference backend: the specification the compiled backends are tested against.

Written to be read, not to be fast: one layer at a time, the whole ``(n_samples, width)``
array in memory, every statistic by its plainest NumPy expression.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .. import random as _random
from ..plan import Layer, Plan
from ..result import RawStats
from ..schemes import draw

__all__ = [
    "check_available",
    "estimate_memory",
    "histogram",
    "layer_inputs",
    "layer_weights",
    "run",
]


def layer_inputs(plan: Plan) -> NDArray:
    """The input samples: the user's, or N(0, 1) from the INPUTS stream, row by row."""
    if plan.inputs is not None:
        return plan.inputs
    count = plan.n_samples * plan.input_dim
    z = _random.normal(plan.seed, _random.INPUTS, 0, 0, count, plan.dtype)
    return z.reshape(plan.n_samples, plan.input_dim)


def layer_weights(plan: Plan, index: int) -> NDArray:
    """Layer ``index``'s ``(fan_in, fan_out)`` weights: ready-made, or drawn from WEIGHTS."""
    layer = plan.layers[index]
    if layer.weights is not None:
        return layer.weights
    assert layer.distribution is not None
    shape = (layer.fan_in, layer.fan_out)
    return draw(
        layer.distribution,
        shape,
        seed=plan.seed,
        stream=_random.WEIGHTS,
        layer=index,
        dtype=plan.dtype,
    )


def layer_biases(plan: Plan, index: int) -> NDArray:
    """Layer ``index``'s biases, ``bias_std * z`` from the BIASES stream."""
    layer = plan.layers[index]
    z = _random.normal(plan.seed, _random.BIASES, index, 0, layer.fan_out, plan.dtype)
    return z * plan.dtype.type(layer.bias_std)


def histogram(
    values: NDArray[np.float64], bins: int, low: float, high: float
) -> tuple[NDArray[np.int64], int, int]:
    """Counts in ``bins`` equal bins of ``[low, high]``, and the counts below and above.

    Bin ``floor((v - low) * (bins / (high - low)))``, clamped to the last bin (which holds
    ``v == high``).  NaN falls in none of the three.
    """
    inside = (values >= low) & (values <= high)
    index = np.floor((values[inside] - low) * (bins / (high - low))).astype(np.int64)
    counts = np.bincount(np.minimum(index, bins - 1), minlength=bins)
    return counts, int(np.sum(values < low)), int(np.sum(values > high))


def _unit_moments(values: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    mean = values.mean(axis=0)
    return mean, ((values - mean) ** 2).sum(axis=0)


def _layer_stats(pre: NDArray, post: NDArray, layer: Layer, plan: Plan) -> dict:
    h = pre.astype(np.float64)
    a = post.astype(np.float64)
    finite = np.isfinite(a)
    counts, below, above = histogram(a, plan.bins, *plan.hist_range)
    if layer.activation.saturation is None:
        saturated = 0
    else:
        low, high = layer.activation.saturation
        saturated = int(np.sum((a <= low) | (a >= high)))
    return {
        "unit": _unit_moments(a),
        "pre_unit": _unit_moments(h),
        "min": float(a[finite].min()) if finite.any() else np.nan,
        "max": float(a[finite].max()) if finite.any() else np.nan,
        "hist": counts,
        "below": below,
        "above": above,
        "zeros": int(np.sum(a == 0)),
        "saturated": saturated,
        "nonfinite": int(a.size - finite.sum()),
        "pre_nonfinite": int(h.size - np.isfinite(h).sum()),
    }


def run(plan: Plan) -> RawStats:
    """Propagate ``plan``'s inputs through its layers and gather every statistic."""
    x = layer_inputs(plan)
    stats = []
    kept = []
    with np.errstate(all="ignore"):
        for i, layer in enumerate(plan.layers):
            h = x @ layer_weights(plan, i)
            if layer.bias_std > 0:
                h = h + layer_biases(plan, i)
            x = layer.activation(h)
            stats.append(_layer_stats(h, x, layer, plan))
            if plan.keep_activations:
                kept.append(x)

    def column(key: str) -> NDArray:
        return np.array([s[key] for s in stats])

    return RawStats(
        unit_mean=[s["unit"][0] for s in stats],
        unit_m2=[s["unit"][1] for s in stats],
        pre_unit_mean=[s["pre_unit"][0] for s in stats],
        pre_unit_m2=[s["pre_unit"][1] for s in stats],
        min=column("min"),
        max=column("max"),
        hist=np.stack([s["hist"] for s in stats]),
        below=column("below"),
        above=column("above"),
        zeros=column("zeros"),
        saturated=column("saturated"),
        nonfinite=column("nonfinite"),
        pre_nonfinite=column("pre_nonfinite"),
        activations=kept if plan.keep_activations else None,
    )


def estimate_memory(plan: Plan) -> int:
    """Bytes :func:`run` needs: about six float64 copies of the widest layer over all samples
    (pre-activations, activations and their float64 statistics), a layer's weights and the
    next one's, two histograms and the kept activations."""
    width = max(plan.input_dim, *plan.widths)
    slots = (plan.bins + 3) * 8
    return 6 * plan.n_samples * width * 8 + plan.weight_bytes(0) + 2 * slots + plan.kept_bytes()


def check_available() -> None:
    """The reference needs nothing beyond NumPy."""
