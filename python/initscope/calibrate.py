"""Gains that keep the signal: from mean-field theory, and from data (LSUV).

- :func:`critical_gain`: σ_w on the critical line ``χ₁ = 1`` at a given σ_b (the edge of
  chaos; tanh: 1 at σ_b = 0), refusing a critical point whose fixed point is unstable;
- :func:`variance_preserving_gain`: the σ_w that makes the fixed point of the length map
  ``q* = target_q`` (the analytic gain of AutoInit, Bingham & Miikkulainen 2022, for a
  dense layer), for every built-in activation and any bias;
- :class:`calibrated`: that gain as a scheme, ``init=calibrated("gelu")``, and
  :func:`calibrated_init`, one per layer with the first fed by the inputs;
- :func:`lsuv`: layer-sequential unit variance (Mishkin & Matas 2016, "All you need is a
  good init"): each layer's weights are rescaled, one layer at a time, until the layer's
  output std, measured by runs of :func:`initscope.propagate` on a batch, is within ``tol``
  of the target; returns the scales and the schemes (:class:`scaled`) that rebuild the
  calibrated network exactly.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from . import theory
from ._checks import float_dtype, positive_int, real
from .activations import Activation
from .schemes import Distribution, Scheme, scheme
from .schemes.base import check_choice, check_real, set_checked

__all__ = [
    "LSUVResult",
    "calibrated",
    "calibrated_init",
    "critical_gain",
    "lsuv",
    "scaled",
    "variance_preserving_gain",
]


def _activation(activation: Any) -> Activation:
    return theory._resolve(activation)


def critical_gain(activation: Any, sigma_b: float = 0.0, *, allow_unstable: bool = False) -> float:
    """σ_w on the critical line: ``χ₁ = σ_w² E[φ'(√q* z)²] = 1`` at the fixed point ``q*``.

    Parameters
    ----------
    activation
        A name in ``initscope.ACTIVATIONS``, an ``Activation`` or a ``(name, param)`` pair.
    sigma_b
        The bias std.
    allow_unstable
        Return a critical point whose fixed point is unstable (``V'(q*) > 1``: the length
        runs away from ``q*``, so a network there is not critical for long) instead of
        refusing it.

    Returns
    -------
    float
        σ_w, the weight scale with ``Var W = σ_w² / fan_in``.  Where several stable points
        exist, the one with the smallest ``q*``.

    Raises
    ------
    ValueError
        Where no critical point exists at this σ_b (relu-like activations with
        ``σ_b > 0``; softplus), or only unstable ones, with the reason.

    Examples
    --------
    >>> critical_gain("tanh"), round(critical_gain("relu"), 6)
    (1.0, 1.414214)
    >>> round(critical_gain("tanh", 0.1), 6)
    1.193401
    """
    act = _activation(activation)
    sigma_b = real(sigma_b, "sigma_b", low=0.0)
    label = act.name
    spec = theory._spec(act)
    points = theory._critical_points(act, sigma_b)
    if spec.slopes is not None and sigma_b > 0:
        gain = 1.0 / math.sqrt(spec.deriv_sq0)
        raise ValueError(
            f"{label} has no critical point with sigma_b = {sigma_b:g}: E[φ'²] does not depend "
            f"on q, so χ₁ = 1 needs σ_w = {gain:.6g} for every q, and there the length grows "
            f"by σ_b² every layer; its critical line is the single point (σ_w = {gain:.6g}, "
            "σ_b = 0)"
        )
    stable = [p for p in points if p.stable]
    if stable:
        return float(min(stable, key=lambda p: p.q_star).sigma_w)
    if points and allow_unstable:
        return float(min(points, key=lambda p: p.q_star).sigma_w)
    if points:
        p = min(points, key=lambda p: p.q_star)
        line = theory.critical_line(act, np.geomspace(1e-8, 1e6, 561))
        where = ""
        if line.kind == "curve" and line.stable.any():
            where = (
                f"; its critical line is stable only for sigma_b >= "
                f"{line.sigma_b[line.stable].min():.4g}"
            )
        if p.q_star == 0.0:
            why = (
                f"at σ_w = {p.sigma_w:.6g} the fixed point q* = 0 repels: the length map lies "
                "above the diagonal just above 0, so q grows away from it"
            )
        else:
            why = (
                f"at σ_w = {p.sigma_w:.6g} the fixed point q* = {p.q_star:.6g} is unstable, "
                f"V'(q*) = {p.length_slope:.6g} > 1"
            )
        raise ValueError(
            f"{label} has only an unstable critical point at sigma_b = {sigma_b:g}: {why}{where} "
            "(allow_unstable=True returns it anyway)"
        )
    raise ValueError(
        f"{label} has no critical point at sigma_b = {sigma_b:g}: no fixed point q* in "
        f"[1e-12, 1e12] has χ₁ = 1 there (σ_b² = q* - E[φ²]/E[φ'²] never equals "
        f"{sigma_b**2:g})"
    )


def variance_preserving_gain(
    activation: Any,
    sigma_b: float = 0.0,
    target_q: float = 1.0,
    *,
    input_sq_mean: float | None = None,
) -> float:
    """The σ_w that makes ``q* = target_q`` the fixed point of the length map.

    ``σ_w² = (target_q - σ_b²) / E[φ(√target_q z)²]``: a layer fed by the activations of a
    layer at ``q = target_q`` passes ``q = target_q`` on.  With ``input_sq_mean``, the gain
    of a first layer instead, fed by inputs of that second moment:
    ``σ_w² = (target_q - σ_b²) / input_sq_mean``.

    Parameters
    ----------
    activation
        A name, an ``Activation`` or a ``(name, param)`` pair: the activation of the layer
        before (whose outputs this layer receives).
    sigma_b
        The bias std, with ``σ_b² < target_q``.
    target_q
        The pre-activation variance to keep, ``> 0`` (``pre_std = √target_q``).
    input_sq_mean
        For the first layer: the inputs' second moment (1 for generated inputs).

    Returns
    -------
    float
        σ_w.  Whether ``q*`` is stable (``V'(q*) < 1``) is not required here: with
        ``V' > 1`` the length drifts away from the target over many layers at finite width
        (see :func:`initscope.theory.fixed_point`).

    Examples
    --------
    >>> round(variance_preserving_gain("relu"), 6), round(variance_preserving_gain("selu"), 6)
    (1.414214, 1.0)
    """
    act = _activation(activation)
    sigma_b = real(sigma_b, "sigma_b", low=0.0)
    target_q = real(target_q, "target_q", low=0.0, strict=True)
    if sigma_b * sigma_b >= target_q:
        raise ValueError(
            f"sigma_b = {sigma_b:g} alone gives q >= sigma_b² = {sigma_b**2:g}: target_q must "
            f"exceed it, got {target_q:g}"
        )
    if input_sq_mean is not None:
        moment = real(input_sq_mean, "input_sq_mean", low=0.0, strict=True)
    else:
        moment = float(theory.gaussian_moments(act, target_q).sq_mean)
    return math.sqrt((target_q - sigma_b * sigma_b) / moment)


_DISTRIBUTIONS = ("normal", "uniform")


@dataclass(frozen=True)
class calibrated(Scheme):
    """Weights of variance ``σ_w² / fan_in`` with σ_w from :func:`variance_preserving_gain`.

    ``init=calibrated("gelu", sigma_b=0.1)`` with ``bias=0.1`` keeps every layer's
    pre-activation variance at ``target_q`` (the inputs of the first layer have their own
    second moment: :func:`calibrated_init` gives the first layer its gain).

    Parameters
    ----------
    activation : str or Activation or (name, param)
        The activation of the layer before.
    sigma_b : float
        The network's bias std.
    target_q : float
        The pre-activation variance to keep.
    input_sq_mean : float, optional
        Calibrate a first layer, fed by inputs of this second moment, instead.
    distribution : {"normal", "uniform"}
        N(0, σ_w²/fan_in), or uniform with that variance.
    """

    activation: Any = "tanh"
    sigma_b: float = 0.0
    target_q: float = 1.0
    input_sq_mean: float | None = None
    distribution_kind: Literal["normal", "uniform"] = "normal"

    def __post_init__(self) -> None:
        act = _activation(self.activation)
        sigma_b = check_real("calibrated", "sigma_b", self.sigma_b, low=0.0)
        target_q = check_real("calibrated", "target_q", self.target_q, low=0.0, strict=True)
        moment = self.input_sq_mean
        if moment is not None:
            moment = check_real("calibrated", "input_sq_mean", moment, low=0.0, strict=True)
        kind = check_choice(
            "calibrated", "distribution_kind", self.distribution_kind, _DISTRIBUTIONS
        )
        set_checked(
            self,
            activation=act,
            sigma_b=sigma_b,
            target_q=target_q,
            input_sq_mean=moment,
            distribution_kind=kind,
        )
        # computed once here (a quadrature), checked with the parameters
        object.__setattr__(
            self, "_gain", variance_preserving_gain(act, sigma_b, target_q, input_sq_mean=moment)
        )

    @property
    def gain(self) -> float:
        """σ_w."""
        return float(self._gain)  # type: ignore[attr-defined]

    def distribution(self, fan_in: int, fan_out: int) -> Distribution:
        std = self.gain / math.sqrt(fan_in)
        if self.distribution_kind == "normal":
            return Distribution("normal", 0.0, std)
        limit = math.sqrt(3.0) * std
        return Distribution("uniform", -limit, limit)


def calibrated_init(
    depth: int,
    activation: Any,
    sigma_b: float = 0.0,
    target_q: float = 1.0,
    *,
    input_sq_mean: float = 1.0,
    distribution: Literal["normal", "uniform"] = "normal",
) -> list[Scheme]:
    """One :class:`calibrated` scheme per layer: the first for the inputs, the rest for the
    activations, so that every layer's pre-activation variance is ``target_q``.

    Parameters
    ----------
    depth
        The number of layers.
    activation, sigma_b, target_q
        As :func:`variance_preserving_gain`; a list of activations (one per layer) is not
        supported: every layer has the same.
    input_sq_mean
        The inputs' second moment (1 for generated inputs).
    distribution
        ``"normal"`` or ``"uniform"``.

    Returns
    -------
    list of Scheme
        ``init=`` for :func:`initscope.propagate`, with ``bias=sigma_b``.
    """
    depth = positive_int(depth, "depth")
    first: Scheme = calibrated(activation, sigma_b, target_q, input_sq_mean, distribution)
    rest: Scheme = calibrated(activation, sigma_b, target_q, None, distribution)
    return [first] + [rest] * (depth - 1)


@dataclass(frozen=True)
class scaled(Scheme):
    """Another scheme's weights times ``scale``: what :func:`lsuv` returns per layer.

    A drawn scheme stays drawn, with its distribution scaled (the kernels draw it in place,
    and :func:`initscope.make_weights` gives the same matrix); a matrix scheme (orthogonal,
    ...) is built and multiplied in float64, then rounded to the run's dtype.

    Parameters
    ----------
    base
        A scheme, its name, or anything ``init=`` accepts.
    scale : float
        The factor.
    """

    base: Any = "orthogonal"
    scale: float = 1.0

    def __post_init__(self) -> None:
        set_checked(self, base=scheme(self.base), scale=check_real("scaled", "scale", self.scale))

    @property
    def name(self) -> str:
        return f"scaled({self.base.name})"

    def distribution(self, fan_in: int, fan_out: int) -> Distribution | None:
        dist = self.base.distribution(fan_in, fan_out)
        if dist is None:
            return None
        s = self.scale
        if dist.kind == "normal":
            return Distribution("normal", dist.a * s, dist.b * abs(s))
        low, high = sorted((dist.a * s, dist.b * s))
        return Distribution("uniform", low, high)

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        if self.base.distribution(fan_in, fan_out) is not None:
            return super().sample(fan_in, fan_out, seed=seed, layer=layer, dtype=dtype)
        dtype_ = float_dtype(dtype)
        w = self.base.sample(fan_in, fan_out, seed=seed, layer=layer, dtype=dtype_)
        return np.ascontiguousarray(np.asarray(w, dtype=np.float64) * self.scale, dtype=dtype_)


@dataclass(frozen=True)
class LSUVResult:
    """What :func:`lsuv` found.

    Attributes
    ----------
    scales
        The factor applied to each layer's weights (1 where the base was already right).
    iterations
        Rescalings per layer.
    std
        Each layer's measured ``statistic`` with the final scales, on the calibration batch.
    converged
        Whether each layer reached ``|std / target_std - 1| <= tol``.
    init
        One :class:`scaled` scheme per layer: ``propagate(widths, init=list(result.init),
        activation=..., bias=..., seed=seed)`` is the calibrated network (its weights:
        ``make_weights(result.init[l], fan_in, fan_out, seed=seed, layer=l)``).
    statistic
        ``"pre_std"`` (the std of ``X @ W + b``, the layer's output before the nonlinearity,
        as Mishkin & Matas normalise it) or ``"std"`` (after it).
    """

    scales: NDArray[np.float64]
    iterations: NDArray[np.int64]
    std: NDArray[np.float64]
    converged: NDArray[np.bool_]
    init: tuple[Scheme, ...]
    statistic: str
    target_std: float
    tol: float
    seed: int

    def __str__(self) -> str:
        lines = [f"{'layer':>5}  {'scale':>12}  {self.statistic:>12}  {'iterations':>10}"]
        for i, (s, v, n) in enumerate(zip(self.scales, self.std, self.iterations, strict=True)):
            lines.append(f"{i + 1:>5}  {s:>12.6g}  {v:>12.6g}  {n:>10d}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class _Built(Scheme):
    """A matrix built once: a matrix layer before the one :func:`lsuv` calibrates, so that
    its runs do not build (factor) it again."""

    matrix: Any = None

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        return self.matrix


def lsuv(
    widths: Sequence[int],
    activation: Any = "tanh",
    *,
    init: Any = "orthogonal",
    target_std: float = 1.0,
    tol: float = 0.01,
    max_iter: int = 10,
    n_samples: int = 1000,
    input_dim: int | None = None,
    inputs: NDArray | None = None,
    bias: float | Sequence[float] = 0.0,
    seed: int = 0,
    dtype: str = "float64",
    statistic: Literal["pre_std", "std"] = "pre_std",
    backend: str = "auto",
    threads: int | None = None,
    chunk_size: int | None = None,
    max_memory: int | None = None,
) -> LSUVResult:
    """Layer-sequential unit-variance calibration (Mishkin & Matas 2016).

    Layer by layer, from the first: draw the layer's weights from ``init`` (orthogonal, as
    in the paper), push the batch through, measure the layer's output std, and rescale the
    weights by ``target_std / std`` until ``|std / target_std - 1| <= tol`` (at most
    ``max_iter`` rescalings); then the next layer sees the calibrated one's activations.
    With biases the output is not proportional to the scale, hence the iterations.

    Every measurement is a run of :func:`initscope.propagate` (its streaming statistics,
    chunked, with its memory check) of the layers up to the one being calibrated: the
    earlier ones with the scales found for them, and the next one with its base scheme,
    whose statistic starts that layer's calibration.  The runs use the weights, biases,
    inputs and chunks of a run of the whole network with the same ``seed``, so the returned
    schemes rebuild the calibrated network exactly: a :func:`initscope.propagate` of it on
    the same backend (and ``chunk_size``) measures the same stds, bit for bit.  Each
    measurement runs the layers before again: ``L`` layers cost about ``L² / 2`` layer
    passes times the rescalings per layer.

    Parameters
    ----------
    widths
        The layer sizes.
    activation
        A name, an ``Activation``, a ``(name, param)`` pair, or a list with one per layer.
    init
        The schemes to scale (any ``init=``; a list gives one per layer).
    target_std
        The std to reach, ``> 0``.
    tol
        The relative tolerance, ``> 0``.
    max_iter
        Rescalings per layer at most, an integer ``>= 0``.
    n_samples, input_dim, inputs, bias, seed, dtype
        As :func:`initscope.propagate`: the calibration batch is the run's inputs.
    statistic
        ``"pre_std"`` (default) calibrates the std of the pre-activations ``X @ W + b``,
        ``"std"`` that of the activations.
    backend, threads, chunk_size, max_memory
        As :func:`initscope.propagate`, for every run (``max_memory`` is checked against
        the whole network's estimate before the first).

    Returns
    -------
    LSUVResult
        ``scales``, ``iterations``, ``std``, ``converged`` and ``init`` (the schemes).

    Warns
    -----
    RuntimeWarning
        When a layer does not reach the tolerance in ``max_iter`` rescalings.
    """
    from .api import _machine_memory, propagate
    from .backends import get_backend
    from .plan import estimate_memory, make_plan

    target_std = real(target_std, "target_std", low=0.0, strict=True)
    tol = real(tol, "tol", low=0.0, strict=True)
    if isinstance(max_iter, bool | np.bool_) or not isinstance(max_iter, numbers.Integral):
        raise TypeError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    max_iter = int(max_iter)
    if max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    if statistic not in ("pre_std", "std"):
        raise ValueError(f"statistic must be 'pre_std' or 'std', got {statistic!r}")
    plan = make_plan(
        widths,
        init=init,
        activation=activation,
        n_samples=n_samples,
        input_dim=input_dim,
        inputs=inputs,
        bias=bias,
        seed=seed,
        dtype=dtype,
        threads=threads,
        chunk_size=chunk_size,
        build_weights=False,
    )
    name, _ = get_backend(backend)
    limit = _machine_memory() * 3 // 4 if max_memory is None else int(max_memory)
    need = estimate_memory(plan, backend=name)
    if need > limit:
        raise ValueError(
            f"lsuv: its runs of this network need about {need / 2**20:.0f} MiB, more than "
            f"max_memory = {limit / 2**20:.0f} MiB: lower chunk_size, n_samples or widths, "
            "or raise max_memory"
        )
    run_dtype = plan.dtype
    layers = plan.layers
    depth = len(layers)
    scales = np.ones(depth)
    iterations = np.zeros(depth, dtype=np.int64)
    stds = np.full(depth, np.nan)
    converged = np.zeros(depth, dtype=bool)
    schemes: list[Scheme] = []  # the returned ones
    before: list[Scheme] = []  # the same layers as the runs take them: matrices built once

    def scaled_layer(i: int, s: float, built: NDArray | None) -> Scheme:
        """Layer ``i``'s scheme times ``s`` as a run takes it (a matrix: as scaled.sample
        makes it, from the base matrix ``built``)."""
        if built is None:
            return layers[i].scheme if s == 1.0 else scaled(layers[i].scheme, s)
        if s == 1.0:
            return _Built(built)
        return _Built(
            np.ascontiguousarray(np.asarray(built, dtype=np.float64) * s, dtype=run_dtype)
        )

    def base_matrix(i: int) -> NDArray | None:
        layer = layers[i]
        if layer.distribution is not None:
            return None
        return layer.scheme.sample(
            layer.fan_in, layer.fan_out, seed=plan.seed, layer=i, dtype=run_dtype
        )

    def run(chain: list[Scheme]) -> NDArray[np.float64]:
        """The statistic of every layer of a run of the first ``len(chain)`` layers."""
        k = len(chain)
        result = propagate(
            plan.widths[:k],
            init=chain,
            activation=[layer.activation for layer in layers[:k]],
            bias=[layer.bias_std for layer in layers[:k]],
            n_samples=plan.n_samples,
            input_dim=plan.input_dim,
            inputs=plan.inputs,
            seed=plan.seed,
            dtype=run_dtype.name,
            bins=1,  # the histogram is not used
            backend=name,
            threads=plan.threads,
            chunk_size=plan.chunk_size,
            max_memory=limit,
        )
        return np.asarray(getattr(result, statistic), dtype=np.float64)

    built = base_matrix(0)
    # the last run's statistics: when it was layer i - 1's at its final scale, it holds
    # layer i's at its base scale too
    measured: NDArray[np.float64] = np.empty(0)
    for i in range(depth):
        following: list[Scheme] = []
        next_built = None
        if i + 1 < depth:  # measured on the way: the start of the next layer's calibration
            next_built = base_matrix(i + 1)
            following = [scaled_layer(i + 1, 1.0, next_built)]
        s = 1.0
        current = scaled_layer(i, s, built)
        for it in range(max_iter + 1):
            if it > 0 or measured.size <= i:
                measured = run([*before, current, *following])
            value = float(measured[i])
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"lsuv: layer {i + 1}'s {statistic} is {value} with scale {s:g}: it cannot "
                    "be rescaled to the target (dead or overflowing layer)"
                )
            stds[i] = value
            iterations[i] = it
            if abs(value / target_std - 1.0) <= tol:
                converged[i] = True
                break
            if it == max_iter:
                break
            s *= target_std / value
            current = scaled_layer(i, s, built)
        scales[i] = s
        schemes.append(layers[i].scheme if s == 1.0 else scaled(layers[i].scheme, s))
        before.append(current)
        built = next_built
    if not converged.all():
        bad = ", ".join(str(i + 1) for i in np.flatnonzero(~converged))
        warnings.warn(
            f"lsuv: layers {bad} did not reach {statistic} within tol = {tol:g} of "
            f"{target_std:g} in max_iter = {max_iter} rescalings",
            RuntimeWarning,
            stacklevel=2,
        )
    return LSUVResult(
        scales=scales,
        iterations=iterations,
        std=stds,
        converged=converged,
        init=tuple(schemes),
        statistic=statistic,
        target_std=target_std,
        tol=tol,
        seed=plan.seed,
    )
