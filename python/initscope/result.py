"""What a run returns: raw per-unit accumulators from a backend, and the finished result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from collections.abc import Mapping

    import matplotlib.figure
    import pandas

    from .plan import Plan

__all__ = ["PropagationResult", "RawStats"]


@dataclass
class RawStats:
    """The accumulators every backend fills, one entry per layer.

    ``unit_mean[l]`` and ``unit_m2[l]`` are per unit (column): the mean over samples and the
    sum of squared deviations from it (``pre_`` for the pre-activations).  Integer counts
    are over all ``n_samples * width`` entries; ``min`` and ``max`` over the finite ones.
    """

    unit_mean: list[NDArray[np.float64]]
    unit_m2: list[NDArray[np.float64]]
    pre_unit_mean: list[NDArray[np.float64]]
    pre_unit_m2: list[NDArray[np.float64]]
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


def _moments(
    unit_mean: NDArray[np.float64], unit_m2: NDArray[np.float64], n: int
) -> tuple[float, float, float, float]:
    """Mean and std over all entries, and the per-unit figures, from per-unit accumulators.

    Chan et al.'s merge over units: every unit has ``n`` samples, so the mean is the mean of
    unit means and ``M2 = sum(M2_u) + n * sum((mean_u - mean)**2)``.
    """
    # ndarray.sum / size is np.mean's arithmetic without its per-call overhead, which
    # dominates small networks in a sweep
    units = unit_mean.size
    mean = float(unit_mean.sum()) / units
    deviation = unit_mean - mean
    m2 = float(unit_m2.sum()) + n * float((deviation * deviation).sum())
    std = math.sqrt(max(m2, 0.0) / (n * units))
    sq_mean = float((unit_mean * unit_mean).sum()) / units
    return mean, std, sq_mean, float(unit_m2.sum()) / units / n


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
    activations
        The post-activation arrays, when run with ``keep_activations=True``.
    """

    widths: tuple[int, ...]
    activation_names: tuple[str, ...]
    init_names: tuple[str, ...]
    n_samples: int
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
    activations: list[NDArray] | None = field(default=None, repr=False)

    #: The per-layer arrays, in the order of :meth:`to_frame`'s columns.
    LAYER_FIELDS = (
        "mean", "std", "min", "max", "pre_mean", "pre_std", "zero_fraction",
        "saturated_fraction", "channel_sq_mean", "channel_var", "below", "above",
        "nonfinite", "pre_nonfinite",
    )  # fmt: skip

    @property
    def depth(self) -> int:
        return len(self.widths)

    def __str__(self) -> str:
        return "\n".join(
            "Hidden layer %d had mean %f and std %f" % (i + 1, self.mean[i], self.std[i])
            for i in range(self.depth)
        )

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
            "dtype": self.dtype,
            "backend": self.backend,
        }
        for name in (*self.LAYER_FIELDS, "hist", "bin_edges"):
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
        }
        for name in self.LAYER_FIELDS:
            data[name] = getattr(self, name)
        data["hist"] = list(self.hist)
        return pd.DataFrame(data)

    def plot(
        self,
        *,
        ax: Any = None,
        layers: Any = None,
        log_std: bool = False,
        overlay: Mapping[str, Any] | None = None,
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
            (a prediction, another run).

        Returns
        -------
        matplotlib.figure.Figure
            The figure drawn on; ``fig.savefig("out.png")`` writes it.
        """
        from .plot import plot_result

        return plot_result(self, ax=ax, layers=layers, log_std=log_std, overlay=overlay)

    @classmethod
    def from_raw(cls, plan: Plan, raw: RawStats, backend: str) -> PropagationResult:
        """Finish the per-unit accumulators of any backend into the per-layer statistics."""
        depth = len(plan.layers)
        n = plan.n_samples
        post = np.full((depth, 4), np.nan)
        pre = np.full((depth, 4), np.nan)
        with np.errstate(over="ignore", invalid="ignore"):  # squares of |a| > 1e154: inf std
            for i in range(depth):
                if raw.nonfinite[i] == 0:
                    post[i] = _moments(raw.unit_mean[i], raw.unit_m2[i], n)
                if raw.pre_nonfinite[i] == 0:
                    pre[i] = _moments(raw.pre_unit_mean[i], raw.pre_unit_m2[i], n)
        entries = np.array([n * w for w in plan.widths], dtype=np.float64)
        bounded = np.array([layer.activation.saturation is not None for layer in plan.layers])
        low, high = plan.hist_range
        return cls(
            widths=plan.widths,
            activation_names=tuple(layer.activation.name for layer in plan.layers),
            init_names=tuple(layer.init_name for layer in plan.layers),
            n_samples=n,
            dtype=plan.dtype.name,
            backend=backend,
            mean=post[:, 0],
            std=post[:, 1],
            min=np.asarray(raw.min, dtype=np.float64),
            max=np.asarray(raw.max, dtype=np.float64),
            pre_mean=pre[:, 0],
            pre_std=pre[:, 1],
            hist=np.asarray(raw.hist, dtype=np.int64),
            bin_edges=np.linspace(low, high, plan.bins + 1),
            below=np.asarray(raw.below, dtype=np.int64),
            above=np.asarray(raw.above, dtype=np.int64),
            zero_fraction=raw.zeros / entries,
            saturated_fraction=np.where(bounded, raw.saturated / entries, np.nan),
            channel_sq_mean=post[:, 2],
            channel_var=post[:, 3],
            nonfinite=np.asarray(raw.nonfinite, dtype=np.int64),
            pre_nonfinite=np.asarray(raw.pre_nonfinite, dtype=np.int64),
            activations=raw.activations,
        )
