"""What a run returns: raw per-unit accumulators from a backend, and the finished result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import matplotlib.figure
    import pandas

    from .plan import Plan
    from .theory import Prediction

__all__ = [
    "GradRaw",
    "PerUnit",
    "PropagationResult",
    "RawStats",
    "finish_runs",
    "finish_shape",
    "layer_moments",
]


#: A per-unit accumulator of every layer: one array per layer, or one ``(layers, width)``
#: array when every layer has the same width (a row per layer, as the list's items).
PerUnit = list[NDArray[np.float64]] | NDArray[np.float64]


@dataclass
class GradRaw:
    """The backward pass's accumulators, one entry per layer ``l`` (``delta_l = dL/dh_l``).

    ``unit_mean[l]`` and ``unit_m2[l]`` are per unit, over samples, as in :class:`RawStats`;
    ``min`` and ``max`` over the finite entries (NaN if none); the histogram counts
    ``delta_l`` in ``bins`` equal bins of ``hist_range``, the range the run used.  The weight
    gradient ``dW_l = a_{l-1}^T delta_l`` is summed over all samples; its std, its Frobenius
    norm and the std of ``W_l`` are over all ``fan_in * fan_out`` entries (float64,
    population std, two-pass).
    """

    unit_mean: PerUnit
    unit_m2: PerUnit
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    hist: NDArray[np.int64]  # (L, grad_bins)
    below: NDArray[np.int64]
    above: NDArray[np.int64]
    nonfinite: NDArray[np.int64]
    hist_range: tuple[float, float]
    weight_grad_std: NDArray[np.float64]
    weight_grad_norm: NDArray[np.float64]
    weight_std: NDArray[np.float64]


@dataclass
class RawStats:
    """The accumulators every backend fills, one entry per layer.

    ``unit_mean[l]`` and ``unit_m2[l]`` are per unit (column): the mean over samples and the
    sum of squared deviations from it (``pre_`` for the pre-activations); a list of one
    array per layer, or one ``(layers, width)`` array when every layer has the same width
    (:data:`PerUnit`).  Integer counts are over all ``n_samples * width`` entries; ``min``
    and ``max`` over the finite ones.
    ``deriv_sq_sum[l]`` is the sum of ``phi'(h_l)**2`` over all entries (NaN if any is NaN;
    None from a backend that does not compute it), ``grads`` the backward pass's
    accumulators of a run with gradients.
    """

    unit_mean: PerUnit
    unit_m2: PerUnit
    pre_unit_mean: PerUnit
    pre_unit_m2: PerUnit
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    hist: NDArray[np.int64]  # (L, bins)
    below: NDArray[np.int64]
    above: NDArray[np.int64]
    zeros: NDArray[np.int64]
    saturated: NDArray[np.int64]
    nonfinite: NDArray[np.int64]
    pre_nonfinite: NDArray[np.int64]
    activations: list[NDArray] | None = None
    deriv_sq_sum: NDArray[np.float64] | None = None
    grads: GradRaw | None = None


def layer_moments(
    unit_mean: Sequence[NDArray[np.float64]] | NDArray[np.float64],
    unit_m2: Sequence[NDArray[np.float64]] | NDArray[np.float64],
    n: NDArray[np.int64],
    finite: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Per row (one layer of one run), from its per-unit accumulators over ``n[row]``
    samples: the mean and std over all entries, the mean over units of the squared unit
    means and of the per-unit variances; ``(rows, 4)``, NaN where not ``finite``.  The
    accumulators are one array per row, or one ``(rows, units)`` array.

    Chan et al.'s merge over units: every unit has ``n`` samples, so the mean is the mean of
    unit means and ``M2 = sum(M2_u) + n * sum((mean_u - mean)**2)``.  Rows of one width are
    computed together, each from its own row sums (NumPy's pairwise sum along a row is the
    sum of that row alone), so a row's figures never depend on the rows beside it.
    """
    out = np.empty((len(unit_mean), 4))
    groups: list[Any]
    sizes = [] if isinstance(unit_mean, np.ndarray) else [len(u) for u in unit_mean]
    if all(size == sizes[0] for size in sizes):
        groups = [range(len(unit_mean))]
    else:
        by_width: dict[int, list[int]] = {}
        for row, size in enumerate(sizes):
            by_width.setdefault(size, []).append(row)
        groups = list(by_width.values())
    with np.errstate(over="ignore", invalid="ignore"):  # squares of |a| > 1e154: inf std
        for rows in groups:
            if isinstance(unit_mean, np.ndarray):
                means = unit_mean.astype(np.float64, copy=False)
                m2s = np.asarray(unit_m2, dtype=np.float64)
            else:
                means = np.array([unit_mean[r] for r in rows], dtype=np.float64)
                m2s = np.array([unit_m2[r] for r in rows], dtype=np.float64)
            units = means.shape[1]
            count = n if isinstance(rows, range) else n[rows]
            mean = means.sum(axis=1) / units
            deviation = means - mean[:, None]
            m2_units = m2s.sum(axis=1)
            m2 = m2_units + count * (deviation * deviation).sum(axis=1)
            where = slice(None) if isinstance(rows, range) else rows
            out[where, 0] = mean
            out[where, 1] = np.sqrt(np.maximum(m2, 0.0) / (count * units))
            out[where, 2] = (means * means).sum(axis=1) / units
            out[where, 3] = m2_units / units / count
    out[~np.asarray(finite, dtype=bool)] = np.nan
    return out


def _run_moments(
    plans: Sequence[Plan],
    accumulators: Sequence[tuple[PerUnit, PerUnit]],
    nonfinite: NDArray[np.int64],
) -> NDArray[np.float64]:
    """:func:`layer_moments` of every layer of every run, ``(runs, layers, 4)``, from each
    run's per-layer ``(unit_mean, unit_m2)`` and its ``(runs, layers)`` non-finite counts."""
    runs, depth = nonfinite.shape
    means = [m for m, _ in accumulators]
    m2s = [m2 for _, m2 in accumulators]
    unit_mean: list[NDArray[np.float64]] | NDArray[np.float64]
    unit_m2: list[NDArray[np.float64]] | NDArray[np.float64]
    shapes = {m.shape if isinstance(m, np.ndarray) else None for m in means}
    if len(shapes) == 1 and None not in shapes:  # (runs * depth, width) at once
        unit_mean, unit_m2 = np.concatenate(means), np.concatenate(m2s)
    else:
        unit_mean = [u for m in means for u in m]
        unit_m2 = [u for m2 in m2s for u in m2]
    return layer_moments(
        unit_mean,
        unit_m2,
        np.repeat(np.array([p.n_samples for p in plans], dtype=np.int64), depth),
        nonfinite.reshape(-1) == 0,
    ).reshape(runs, depth, 4)


def _weight_var(plan: Plan) -> NDArray[np.float64]:
    """σ_w² = fan_in · Var(W) per layer: the drawn distribution's, else the matrix's."""
    out = np.full(len(plan.layers), np.nan)
    for i, layer in enumerate(plan.layers):
        dist = layer.distribution
        if layer.weights is None and dist is not None:
            # products, not powers: a huge std gives inf, where ** raises OverflowError
            spread = dist.b if dist.kind == "normal" else dist.b - dist.a
            var = spread * spread if dist.kind == "normal" else spread * spread / 12.0
            out[i] = layer.fan_in * var
        elif layer.weights is not None:
            out[i] = layer.fan_in * float(np.var(np.asarray(layer.weights, dtype=np.float64)))
    return out


def _input_sq_mean(plan: Plan) -> float:
    """The mean of the squared inputs: 1 for N(0, 1) ones."""
    if plan.inputs is None:
        return 1.0
    x = plan.inputs.astype(np.float64)
    with np.errstate(over="ignore"):
        return float(np.mean(x * x))


def _stacked(values: Sequence[Any], dtype: Any) -> NDArray:
    """Per-run arrays of one length as ``(runs, ...)``."""
    return np.array([np.asarray(v, dtype=dtype) for v in values], dtype=dtype)


@dataclass
class _Network:
    """What the finishing needs of a plan besides its run's numbers, per layer."""

    widths: NDArray[np.float64]
    entries: NDArray[np.float64]  # n_samples * width
    bounded: NDArray[np.bool_]
    weight_var: NDArray[np.float64]
    bias_std: NDArray[np.float64]
    bin_edges: NDArray[np.float64]

    @classmethod
    def of(cls, plan: Plan) -> _Network:
        low, high = plan.hist_range
        return cls(
            widths=np.asarray(plan.widths, dtype=np.float64),
            entries=np.array([plan.n_samples * w for w in plan.widths], dtype=np.float64),
            bounded=np.array([layer.activation.saturation is not None for layer in plan.layers]),
            weight_var=_weight_var(plan),
            bias_std=np.array([layer.bias_std for layer in plan.layers], dtype=np.float64),
            bin_edges=np.linspace(low, high, plan.bins + 1),
        )


def _networks(plans: Sequence[Plan]) -> list[_Network]:
    """:class:`_Network` of each plan, computed once for the plans of one network (the
    repeats of a configuration differ only in their seed, and share their layers)."""
    seen: dict[tuple[Any, ...], _Network] = {}
    out = []
    for plan in plans:
        key = (id(plan.layers), plan.n_samples, plan.hist_range, plan.bins)
        if key not in seen:
            seen[key] = _Network.of(plan)
        out.append(seen[key])
    return out


def _finish_gradients(
    plans: Sequence[Plan], raws: Sequence[RawStats], backend: str, widths: NDArray[np.float64]
) -> dict[str, Any]:
    """The gradient fields of :func:`finish_runs` (none without gradients)."""
    if not plans[0].gradients:
        return {}
    grads = [raw.grads for raw in raws]
    if any(g is None for g in grads):
        raise RuntimeError(f"the {backend} backend returned no gradients for gradients=True")
    runs, depth = widths.shape
    done = cast("list[GradRaw]", grads)
    nonfinite = _stacked([g.nonfinite for g in done], np.int64)
    moments = _run_moments(plans, [(g.unit_mean, g.unit_m2) for g in done], nonfinite)
    mean, std = moments[:, :, 0], moments[:, :, 1]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sq_mean = std * std + mean * mean
        chi1_measured = np.full((runs, depth), np.nan)
        chi1_measured[:, :-1] = sq_mean[:, :-1] / sq_mean[:, 1:] * widths[:, :-1] / widths[:, 1:]
        weight_grad_std = _stacked([g.weight_grad_std for g in done], np.float64)
        ratio = weight_grad_std / _stacked([g.weight_std for g in done], np.float64)
    ranges = [(float(g.hist_range[0]), float(g.hist_range[1])) for g in done]
    edges: dict[tuple[float, float, int], NDArray[np.float64]] = {}
    for (low, high), plan in zip(ranges, plans, strict=True):
        if (low, high, plan.grad_bins) not in edges:
            edges[low, high, plan.grad_bins] = np.linspace(low, high, plan.grad_bins + 1)
    return {
        "grad_mean": mean,
        "grad_std": std,
        "grad_min": _stacked([g.min for g in done], np.float64),
        "grad_max": _stacked([g.max for g in done], np.float64),
        "grad_hist": _stacked([g.hist for g in done], np.int64),
        "grad_bin_edges": np.array(
            [edges[lo, hi, p.grad_bins] for (lo, hi), p in zip(ranges, plans, strict=True)]
        ),
        "grad_range": ranges,
        "grad_below": _stacked([g.below for g in done], np.int64),
        "grad_above": _stacked([g.above for g in done], np.int64),
        "grad_nonfinite": nonfinite,
        "grad_sq_mean": sq_mean,
        "weight_grad_std": weight_grad_std,
        "weight_grad_norm": _stacked([g.weight_grad_norm for g in done], np.float64),
        "weight_grad_ratio": ratio,
        "chi1_measured": chi1_measured,
    }


def finish_shape(plan: Plan) -> tuple[int, int, bool, int]:
    """What the plans finished together by :func:`finish_runs` must share."""
    return len(plan.layers), plan.bins, plan.gradients, plan.grad_bins if plan.gradients else 0


def finish_runs(plans: Sequence[Plan], raws: Sequence[RawStats], backend: str) -> dict[str, Any]:
    """Finish the accumulators of several runs at once, vectorised over runs and layers: the
    per-layer fields of :class:`PropagationResult`, each stacked over the runs.

    The plans must agree in depth, bins and gradients (:func:`finish_shape`); they may differ
    in anything else (widths, samples, schemes, activations, seeds).  Returns every name of
    :attr:`PropagationResult.LAYER_FIELDS` (and ``GRAD_FIELDS`` with gradients),
    ``weight_var`` and ``bias_std`` as ``(runs, layers)`` arrays; ``hist`` (and
    ``grad_hist``) as ``(runs, layers, bins)``; ``bin_edges`` (and ``grad_bin_edges``) as
    ``(runs, bins + 1)``; ``grad_range`` as a list of pairs.  Run ``r``'s numbers are
    exactly those of ``PropagationResult.from_raw(plans[r], raws[r], backend)``: every
    figure is computed from its own run's numbers alone, in the same operations.
    """
    shapes = {finish_shape(plan) for plan in plans}
    if len(shapes) != 1:
        raise ValueError(f"plans finished together must share depth and bins, got {shapes}")
    runs, depth = len(plans), len(plans[0].layers)
    networks = _networks(plans)

    one_network = all(net is networks[0] for net in networks)

    def per_run(name: str) -> NDArray:
        """A field of every run's network, ``(runs, ...)``: a read-only view of one."""
        first = getattr(networks[0], name)
        if one_network:
            return np.broadcast_to(first, (runs, *first.shape))
        return np.array([getattr(net, name) for net in networks])

    nonfinite = _stacked([raw.nonfinite for raw in raws], np.int64)
    pre_nonfinite = _stacked([raw.pre_nonfinite for raw in raws], np.int64)
    post = _run_moments(plans, [(r.unit_mean, r.unit_m2) for r in raws], nonfinite)
    pre = _run_moments(plans, [(r.pre_unit_mean, r.pre_unit_m2) for r in raws], pre_nonfinite)
    entries = per_run("entries")
    weight_var = per_run("weight_var")
    chi1 = np.full((runs, depth), np.nan)
    measured = [r for r, raw in enumerate(raws) if raw.deriv_sq_sum is not None]
    if measured:
        deriv = _stacked([raws[r].deriv_sq_sum for r in measured], np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # inf * 0: NaN, undefined
            chi1[measured] = weight_var[measured] * deriv / entries[measured]
    return {
        "mean": post[:, :, 0],
        "std": post[:, :, 1],
        "min": _stacked([raw.min for raw in raws], np.float64),
        "max": _stacked([raw.max for raw in raws], np.float64),
        "pre_mean": pre[:, :, 0],
        "pre_std": pre[:, :, 1],
        "hist": _stacked([raw.hist for raw in raws], np.int64),
        "bin_edges": per_run("bin_edges"),
        "below": _stacked([raw.below for raw in raws], np.int64),
        "above": _stacked([raw.above for raw in raws], np.int64),
        "zero_fraction": _stacked([raw.zeros for raw in raws], np.int64) / entries,
        "saturated_fraction": np.where(
            per_run("bounded"),
            _stacked([raw.saturated for raw in raws], np.int64) / entries,
            np.nan,
        ),
        "channel_sq_mean": post[:, :, 2],
        "channel_var": post[:, :, 3],
        "nonfinite": nonfinite,
        "pre_nonfinite": pre_nonfinite,
        "chi1": chi1,
        "weight_var": weight_var,
        "bias_std": per_run("bias_std"),
        **_finish_gradients(plans, raws, backend, per_run("widths")),
    }


@dataclass
class PropagationResult:
    """Per-layer activation statistics of one network (arrays of length L = depth).

    Attributes
    ----------
    mean, std, min, max
        Of the post-activation values over all ``n_samples * width`` entries.
    pre_mean, pre_std
        Of the pre-activations ``X @ W + b``.
    hist, bin_edges, below, above
        ``hist[l]`` counts values in each of ``bins`` equal bins of ``hist_range``
        (bin ``floor((a - low) * bins / (high - low))``, the top edge in the last bin);
        ``below`` and ``above`` count values outside.
    zero_fraction
        Fraction of exact zeros (dead ReLUs).
    saturated_fraction
        Fraction within 1 % of a bound of a bounded activation (tanh: ``|a| >= 0.99``;
        sigmoid: ``a <= 0.01`` or ``a >= 0.99``); NaN for unbounded activations.
    channel_sq_mean, channel_var
        Mean over units of the squared per-unit mean over samples, and of the per-unit
        variance over samples (the axes of signal-propagation plots).
    nonfinite, pre_nonfinite
        Counts of NaN and inf.  A layer with any has NaN moments: read these counts.
    activation_params
        Each layer's activation parameter (leaky_relu's slope, elu's alpha, else 0).
    weight_var
        σ_w² = ``fan_in * Var(W_l)``: from the scheme's distribution where the weights are
        drawn (normal: std²; uniform on [a, b): (b - a)²/12), else the variance of the
        matrix the run used.
    bias_std
        σ_b, the std of each layer's biases.
    input_dim, input_sq_mean
        The size of each input sample, and the mean of the squared inputs (1 for generated
        inputs).
    chi1
        ``weight_var * mean(phi'(h_l)**2)`` over the layer's entries: the mean-field factor
        by which the squared gradient grows per layer (Schoenholz et al. 2017), from the
        forward pass; NaN where a pre-activation is NaN (or, for gelu and silu, infinite,
        where ``phi'`` is inf * 0).
    grad_mean, grad_std, grad_min, grad_max, grad_sq_mean
        With ``gradients=True`` (None otherwise): of the back-propagated gradients
        ``delta_l = dL/dh_l`` with respect to the pre-activations, over all entries;
        ``grad_sq_mean = grad_std**2 + grad_mean**2``; min and max over the finite entries.
    grad_hist, grad_bin_edges, grad_range, grad_below, grad_above, grad_nonfinite
        ``delta_l`` in ``grad_bins`` equal bins of ``grad_range`` (the same bins for every
        layer, so their histograms compare as Glorot & Bengio's figures do), and the counts
        outside it and of NaN and inf.
    weight_grad_std, weight_grad_norm, weight_grad_ratio
        Of the weight gradients ``dL/dW_l = a_{l-1}^T delta_l`` summed over the samples: the
        std and the Frobenius norm over the matrix's entries, and the std over the std of
        ``W_l`` (the update-to-weight scale; summed over the samples, it grows with
        ``n_samples``).
    chi1_measured
        ``grad_sq_mean[l] / grad_sq_mean[l + 1] * widths[l] / widths[l + 1]``: ``chi1``
        measured on the backward pass; NaN for the last layer.  It pairs ``phi'(h_l)`` with
        σ_w² of layer ``l + 1`` (the weights the gradient comes back through), where
        ``chi1[l]`` takes layer ``l``'s: the two agree where the layers share their scheme
        and width.
    activations
        The post-activation arrays, when run with ``keep_activations=True``.
    """

    widths: tuple[int, ...]
    activation_names: tuple[str, ...]
    init_names: tuple[str, ...]
    n_samples: int
    input_dim: int
    dtype: str
    backend: str
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    pre_mean: NDArray[np.float64]
    pre_std: NDArray[np.float64]
    hist: NDArray[np.int64]
    bin_edges: NDArray[np.float64]
    below: NDArray[np.int64]
    above: NDArray[np.int64]
    zero_fraction: NDArray[np.float64]
    saturated_fraction: NDArray[np.float64]
    channel_sq_mean: NDArray[np.float64]
    channel_var: NDArray[np.float64]
    nonfinite: NDArray[np.int64]
    pre_nonfinite: NDArray[np.int64]
    activation_params: tuple[float, ...]
    weight_var: NDArray[np.float64]
    bias_std: NDArray[np.float64]
    input_sq_mean: float
    chi1: NDArray[np.float64]
    activations: list[NDArray] | None = field(default=None, repr=False)
    grad_mean: NDArray[np.float64] | None = None
    grad_std: NDArray[np.float64] | None = None
    grad_min: NDArray[np.float64] | None = None
    grad_max: NDArray[np.float64] | None = None
    grad_hist: NDArray[np.int64] | None = field(default=None, repr=False)
    grad_bin_edges: NDArray[np.float64] | None = field(default=None, repr=False)
    grad_range: tuple[float, float] | None = None
    grad_below: NDArray[np.int64] | None = None
    grad_above: NDArray[np.int64] | None = None
    grad_nonfinite: NDArray[np.int64] | None = None
    grad_sq_mean: NDArray[np.float64] | None = None
    weight_grad_std: NDArray[np.float64] | None = None
    weight_grad_norm: NDArray[np.float64] | None = None
    weight_grad_ratio: NDArray[np.float64] | None = None
    chi1_measured: NDArray[np.float64] | None = None

    #: The per-layer arrays, in the order of :meth:`to_frame`'s columns.
    LAYER_FIELDS = (
        "mean", "std", "min", "max", "pre_mean", "pre_std", "zero_fraction",
        "saturated_fraction", "channel_sq_mean", "channel_var", "below", "above",
        "nonfinite", "pre_nonfinite", "chi1",
    )  # fmt: skip
    #: The per-layer arrays of a run with gradients (None without), in to_frame's order.
    GRAD_FIELDS = (
        "grad_mean", "grad_std", "grad_min", "grad_max", "grad_sq_mean", "weight_grad_std",
        "weight_grad_norm", "weight_grad_ratio", "chi1_measured", "grad_below", "grad_above",
        "grad_nonfinite",
    )  # fmt: skip

    @property
    def has_gradients(self) -> bool:
        """Whether the run back-propagated gradients (``gradients=True``)."""
        return self.grad_std is not None

    @property
    def depth(self) -> int:
        return len(self.widths)

    def __str__(self) -> str:
        lines = [
            "Hidden layer %d had mean %f and std %f" % (i + 1, self.mean[i], self.std[i])
            for i in range(self.depth)
        ]
        if self.has_gradients:
            lines += ["", "Back-propagated gradients dL/dh and weight gradients dL/dW:"]
            lines += self._gradient_table()
        return "\n".join(lines)

    def _gradient_table(self) -> list[str]:
        """The rows under the forward table of a run with gradients."""
        columns = ("grad_mean", "grad_std", "weight_grad_std", "weight_grad_ratio", "chi1_measured")
        widths = [max(len(name), 11) for name in columns]
        header = "layer  " + "  ".join(f"{n:>{w}}" for n, w in zip(columns, widths, strict=True))
        rows = [header]
        for i in range(self.depth):
            cells = [f"{getattr(self, n)[i]:>{w}.4e}" for n, w in zip(columns, widths, strict=True)]
            rows.append(f"{i + 1:>5}  " + "  ".join(cells))
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data, JSON-serialisable (NaN and inf become None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return clean(value.tolist())
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            if isinstance(value, float) and not math.isfinite(value):
                return None
            return value

        out: dict[str, Any] = {
            "widths": list(self.widths),
            "activation": list(self.activation_names),
            "init": list(self.init_names),
            "n_samples": self.n_samples,
            "input_dim": self.input_dim,
            "dtype": self.dtype,
            "backend": self.backend,
            "activation_params": list(self.activation_params),
            "weight_var": clean(self.weight_var),
            "bias_std": clean(self.bias_std),
            "input_sq_mean": clean(self.input_sq_mean),
            "gradients": self.has_gradients,
        }
        for name in (*self.LAYER_FIELDS, "hist", "bin_edges"):
            out[name] = clean(getattr(self, name))
        if self.has_gradients:
            for name in (*self.GRAD_FIELDS, "grad_hist", "grad_bin_edges", "grad_range"):
                out[name] = clean(getattr(self, name))
        return out

    def to_frame(self) -> pandas.DataFrame:
        """A tidy DataFrame, one row per layer (needs pandas)."""
        import pandas as pd

        data: dict[str, Any] = {
            "layer": np.arange(1, self.depth + 1),
            "width": list(self.widths),
            "activation": list(self.activation_names),
            "init": list(self.init_names),
            "weight_var": self.weight_var,
            "bias_std": self.bias_std,
        }
        for name in self.LAYER_FIELDS:
            data[name] = getattr(self, name)
        data["hist"] = list(self.hist)
        if self.grad_hist is not None:
            for name in self.GRAD_FIELDS:
                data[name] = getattr(self, name)
            data["grad_hist"] = list(self.grad_hist)
        return pd.DataFrame(data)

    def plot(
        self,
        *,
        ax: Any = None,
        layers: Any = None,
        log_std: bool = False,
        overlay: Mapping[str, Any] | None = None,
        gradients: bool = False,
        theory: bool = False,
    ) -> matplotlib.figure.Figure:
        """The classic experiment's figures in one figure (needs matplotlib).

        Layer mean and layer std against depth, and one activation histogram per layer
        from ``hist`` and ``bin_edges``, with the share of values outside ``hist_range``
        written on each, so that a saturated or exploding layer is not silently cut off.

        Parameters
        ----------
        ax
            A Figure or SubFigure to draw in, or ``2 + len(layers)`` Axes (mean, std, then
            one per histogram); default: a new figure.
        layers
            Layer numbers (1 to depth, or negative from the last) whose histograms to draw;
            default: every layer up to 10, else 10 spread evenly from the first to the last.
        log_std
            A log y axis for the std panel (a vanishing signal spans decades).
        overlay
            More series drawn dashed over the measured ones: ``{label: source}``, where a
            source is a mapping or an object giving ``"mean"`` and/or ``"std"`` per layer
            (a prediction, another run); with ``gradients``, ``"grad_std"`` and/or
            ``"weight_grad_ratio"``.
        gradients
            Draw the backward pass of a run with gradients instead: the gradient std
            ``grad_std`` and the ``weight_grad_ratio`` against depth (``log_std``: both on
            log axes), and one histogram of ``dL/dh`` per layer on ``grad_bin_edges``.
        theory
            Draw the mean-field prediction (:meth:`theory`) dashed over the measured mean
            and std, as the overlay ``"theory"``.

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn on; ``fig.savefig("out.png")`` writes it.
        """
        from .plot import plot_result

        if not isinstance(theory, bool | np.bool_):
            raise TypeError(f"theory must be True or False, got {theory!r}")
        if theory:
            if gradients:
                raise ValueError("theory=True draws the forward prediction: not with gradients")
            overlay = {**(overlay or {}), "theory": self.theory()}
        return plot_result(
            self, ax=ax, layers=layers, log_std=log_std, overlay=overlay, gradients=gradients
        )

    def theory(self) -> Prediction:
        """The mean-field prediction for this run's network (``theory.predict_result``).

        Each layer's σ_w² (``weight_var``), σ_b (``bias_std``) and activation, the inputs'
        second moment, and the widths and samples, which set the expected finite-width
        ``spread`` of every statistic.
        """
        from .theory import predict_result

        return predict_result(self)

    def compare_theory(self) -> Any:
        """Measured against predicted per statistic and layer (``theory.compare``).

        A DataFrame (a dict of arrays without pandas) with ``measured``, ``predicted``,
        ``difference``, ``spread`` and ``z = difference / spread``: the difference in units
        of the spread finite width explains; ``print`` it.
        """
        from .theory import compare

        return compare(self)

    @classmethod
    def from_raw(cls, plan: Plan, raw: RawStats, backend: str) -> PropagationResult:
        """Finish the per-unit accumulators of any backend into the per-layer statistics."""
        fields = finish_runs([plan], [raw], backend)
        grads: dict[str, Any] = {}
        if plan.gradients:
            grads = {name: fields[name][0] for name in cls.GRAD_FIELDS}
            grads["grad_hist"] = fields["grad_hist"][0]
            grads["grad_bin_edges"] = fields["grad_bin_edges"][0]
            grads["grad_range"] = fields["grad_range"][0]
        return cls(
            widths=plan.widths,
            activation_names=tuple(layer.activation.name for layer in plan.layers),
            init_names=tuple(layer.init_name for layer in plan.layers),
            n_samples=plan.n_samples,
            input_dim=plan.input_dim,
            dtype=plan.dtype.name,
            backend=backend,
            hist=fields["hist"][0],
            bin_edges=np.array(fields["bin_edges"][0]),
            activation_params=tuple(layer.activation.param for layer in plan.layers),
            weight_var=np.array(fields["weight_var"][0]),
            bias_std=np.array(fields["bias_std"][0]),
            input_sq_mean=_input_sq_mean(plan),
            activations=raw.activations,
            **{name: fields[name][0] for name in cls.LAYER_FIELDS},
            **grads,
        )
