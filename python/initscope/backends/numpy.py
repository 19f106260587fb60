"""The NumPy reference backend: the specification the compiled backends are tested against.

Written to be read, not to be fast: one layer at a time, the whole ``(n_samples, width)``
array in memory, every statistic by its plainest NumPy expression.

With gradients, the backward pass starts from the output gradient ``g = dL/da_L``
(:func:`output_gradient`) and computes, in the run's dtype::

    delta_L     = g * phi'(h_L)
    delta_{l-1} = (delta_l @ W_l.T) * phi'(h_{l-1})
    dW_l        = a_{l-1}.T @ delta_l          (a_0: the inputs; summed over all samples)

and gathers the statistics of every ``delta_l`` (as the forward ones of ``a_l``, in float64)
and of every ``dW_l``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from .. import random as _random
from ..plan import TILE_ROWS, Layer, Plan, grad_range_rule
from ..result import GradRaw, RawStats
from ..schemes import draw

__all__ = [
    "check_available",
    "default_grad_range",
    "estimate_memory",
    "histogram",
    "layer_inputs",
    "layer_weights",
    "output_gradient",
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


def output_gradient(plan: Plan) -> NDArray:
    """``dL/da_L``: the user's ``output_grad``, or N(0, 1) from the GRADS stream, row by row
    (element ``r * widths[-1] + j``, as the inputs)."""
    if plan.output_grad is not None:
        return plan.output_grad
    width = plan.widths[-1]
    z = _random.normal(plan.seed, _random.GRADS, 0, 0, plan.n_samples * width, plan.dtype)
    return z.reshape(plan.n_samples, width)


def default_grad_range(deltas: list[NDArray], n_samples: int) -> tuple[float, float]:
    """``(-R, R)``, ``R`` the power of two at or above the largest finite ``|delta_l|`` of
    every layer over the first tile of samples, ``[0, min(n_samples, TILE_ROWS))``.

    The first tile is fixed by ``n_samples`` alone, so the range (and every histogram)
    is the same for any chunk size or thread count.  No finite entry, or only zeros: R = 1;
    beyond 2**1023 (where the next power of two is not a float), R = the largest itself.
    """
    rows = min(n_samples, TILE_ROWS)
    largest = 0.0
    for delta in deltas:
        first = np.abs(delta[:rows].astype(np.float64))
        finite = first[np.isfinite(first)]
        if finite.size:
            largest = max(largest, float(finite.max()))
    bound = grad_range_rule(largest)
    return -bound, bound


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


def _std(values: NDArray) -> float:
    """Population std over every entry, two-pass in float64."""
    x = values.astype(np.float64)
    deviation = x - x.mean()
    return math.sqrt(float(np.mean(deviation * deviation)))


def _grad_stats(delta: NDArray, bins: int, low: float, high: float) -> dict:
    d = delta.astype(np.float64)
    finite = np.isfinite(d)
    counts, below, above = histogram(d, bins, low, high)
    return {
        "unit": _unit_moments(d),
        "min": float(d[finite].min()) if finite.any() else np.nan,
        "max": float(d[finite].max()) if finite.any() else np.nan,
        "hist": counts,
        "below": below,
        "above": above,
        "nonfinite": int(d.size - finite.sum()),
    }


def backward(
    plan: Plan, inputs: list[NDArray], derivatives: list[NDArray], weights: list[NDArray]
) -> GradRaw:
    """The backward pass from ``inputs[l] = a_{l-1}``, ``derivatives[l] = phi'(h_l)`` and
    ``weights[l] = W_l`` (all in the run's dtype), and its statistics."""
    depth = len(plan.layers)
    deltas: list[NDArray] = [np.empty(0)] * depth
    delta = output_gradient(plan) * derivatives[-1]
    for i in reversed(range(depth)):
        deltas[i] = delta
        if i > 0:
            delta = (delta @ weights[i].T) * derivatives[i - 1]
    low, high = plan.grad_range or default_grad_range(deltas, plan.n_samples)
    stats = [_grad_stats(d, plan.grad_bins, low, high) for d in deltas]
    weight_grad_std, weight_grad_norm, weight_std = [], [], []
    for i in range(depth):
        dw = (inputs[i].T @ deltas[i]).astype(np.float64)  # the GEMM in the run's dtype
        weight_grad_std.append(_std(dw))
        weight_grad_norm.append(math.sqrt(float(np.sum(dw * dw))))
        weight_std.append(_std(weights[i]))

    def column(key: str) -> NDArray:
        return np.array([s[key] for s in stats])

    return GradRaw(
        unit_mean=[s["unit"][0] for s in stats],
        unit_m2=[s["unit"][1] for s in stats],
        min=column("min").astype(np.float64),
        max=column("max").astype(np.float64),
        hist=np.stack([s["hist"] for s in stats]).astype(np.int64),
        below=column("below").astype(np.int64),
        above=column("above").astype(np.int64),
        nonfinite=column("nonfinite").astype(np.int64),
        hist_range=(low, high),
        weight_grad_std=np.array(weight_grad_std),
        weight_grad_norm=np.array(weight_grad_norm),
        weight_std=np.array(weight_std),
    )


def run(plan: Plan) -> RawStats:
    """Propagate ``plan``'s inputs through its layers and gather every statistic."""
    x = layer_inputs(plan)
    stats = []
    kept = []
    deriv_sq_sum = []
    inputs, derivatives, weights = [], [], []  # what the backward pass needs
    grads = None
    with np.errstate(all="ignore"):
        for i, layer in enumerate(plan.layers):
            w = layer_weights(plan, i)
            h = x @ w
            if layer.bias_std > 0:
                h = h + layer_biases(plan, i)
            d = layer.activation.derivative(h)
            deriv_sq_sum.append(float(np.sum(np.square(d.astype(np.float64)))))
            if plan.gradients:
                inputs.append(x)
                derivatives.append(d)
                weights.append(w)
            x = layer.activation(h)
            stats.append(_layer_stats(h, x, layer, plan))
            if plan.keep_activations:
                kept.append(x)
        if plan.gradients:
            grads = backward(plan, inputs, derivatives, weights)

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
        deriv_sq_sum=np.array(deriv_sq_sum, dtype=np.float64),
        grads=grads,
    )


def estimate_memory(plan: Plan) -> int:
    """Bytes :func:`run` needs: about six float64 copies of the widest layer over all samples
    (pre-activations, activations and their float64 statistics), a layer's weights and the
    next one's, two histograms and the kept activations.  With gradients, three more arrays
    per layer over all samples in the run's dtype (its input, ``phi'(h)`` and ``delta``),
    every layer's weights, and a weight gradient and its float64 copies."""
    width = max(plan.input_dim, *plan.widths)
    slots = (plan.bins + 3) * 8
    total = 6 * plan.n_samples * width * 8 + plan.weight_bytes(0) + 2 * slots + plan.kept_bytes()
    if plan.gradients:
        item = plan.dtype.itemsize
        sizes = [layer.fan_in * layer.fan_out for layer in plan.layers]
        total += 3 * len(plan.layers) * plan.n_samples * width * item
        total += sum(sizes) * item + max(sizes) * (item + 3 * 8)
        total += 2 * (plan.grad_bins + 3) * 8 * len(plan.layers)
    return total


def check_available() -> None:
    """The reference needs nothing beyond NumPy."""
