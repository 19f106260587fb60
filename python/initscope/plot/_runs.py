"""Pictures of runs: the classic figures of one result, its histograms, several compared."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ._canvas import axes_list, is_container, new_figure, require_matplotlib, root, single_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from ..result import PropagationResult

__all__ = ["MAX_HISTOGRAMS", "compare", "histograms", "plot_result"]

#: Histograms beyond this many per result are thinned to this many, spread evenly.
MAX_HISTOGRAMS = 10
_HIST_COLUMNS = 5  # histograms per row: ten in one row are too narrow at a README's width


def _check_result(result: Any, name: str = "result") -> PropagationResult:
    from ..result import PropagationResult

    if not isinstance(result, PropagationResult):
        raise TypeError(f"{name} must be a PropagationResult, got {type(result).__name__}")
    return result


def _layer_numbers(layers: Any, depth: int) -> list[int]:
    """The histograms to draw, as layer numbers 1..depth in the caller's order."""
    if layers is None:
        if depth <= MAX_HISTOGRAMS:
            return list(range(1, depth + 1))
        # evenly spread, always with the first and the last layer
        picked = np.round(np.linspace(1, depth, MAX_HISTOGRAMS)).astype(int)
        return [int(layer) for layer in dict.fromkeys(picked.tolist())]
    items = [layers] if isinstance(layers, numbers.Integral) else layers
    if isinstance(items, str) or not isinstance(items, Sequence | np.ndarray):
        raise TypeError(f"layers must be a layer number or a sequence of them, got {layers!r}")
    numbers_: list[int] = []
    for item in items:
        if isinstance(item, bool | np.bool_) or not isinstance(item, numbers.Integral):
            raise TypeError(f"layers must hold integers, got {item!r}")
        layer = int(item)
        if not (1 <= layer <= depth or -depth <= layer <= -1):
            raise ValueError(
                f"layers: layer {layer} is out of range; this network's layers are numbered "
                f"1 to {depth} (or -1 to -{depth} from the last)"
            )
        numbers_.append(layer if layer > 0 else depth + 1 + layer)
    if not numbers_:
        raise ValueError("layers must name at least one layer")
    return list(dict.fromkeys(numbers_))


def _summary(result: PropagationResult) -> str:
    """One line that names a run: init, activation, widths, samples."""
    return f"{_default_label(result)} init, {_network(result)}"


def _network(result: PropagationResult) -> str:
    """What a run's network is, apart from its init: activation, widths, samples."""
    activations = "/".join(dict.fromkeys(result.activation_names))
    if len(set(result.widths)) == 1:
        shape = f"{result.depth} layers of {result.widths[0]}"
    else:
        shape = "widths " + ", ".join(str(w) for w in result.widths)
    return f"{activations}, {shape}, {result.n_samples} samples"


def _series(source: Any, field: str, depth: int, name: str) -> NDArray[np.float64] | None:
    """``source[field]`` or ``source.field`` as a float array of length ``depth``, if any."""
    if isinstance(source, Mapping):
        values = source.get(field)
    else:
        values = getattr(source, field, None)
    if values is None:
        return None
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (depth,):
        raise ValueError(
            f"{name}: {field!r} must hold one value per layer ({depth}), got shape {array.shape}"
        )
    return array


def _check_overlay(overlay: Any, fields: Sequence[str], depth: int) -> dict[str, Any]:
    """``overlay`` as {label: source} where each source gives at least one of ``fields``."""
    if overlay is None:
        return {}
    if not isinstance(overlay, Mapping):
        raise TypeError(
            "overlay must map a label to a mapping or object with per-layer "
            f"{' / '.join(fields)}, got {type(overlay).__name__}"
        )
    for label, source in overlay.items():
        name = f"overlay[{label!r}]"
        if all(_series(source, field, depth, name) is None for field in fields):
            raise ValueError(f"{name} gives none of {', '.join(map(repr, fields))}")
    return dict(overlay)


#: The two panels over depth of :func:`plot_result`: (field, title) each, and the gradients'.
_PANELS = (("mean", "layer mean"), ("std", "layer std"))
_GRAD_PANELS = (
    ("grad_std", "gradient std (dL/dh)"),
    ("weight_grad_ratio", "weight gradient std / weight std"),
)


def _draw_moments(
    ax_mean: Axes,
    ax_std: Axes,
    result: PropagationResult,
    log_std: bool,
    overlay: Mapping[str, Any],
    panels: tuple[tuple[str, str], ...] = _PANELS,
) -> None:
    """The classic figure's two panels: layer mean and layer std against depth (or the
    ``panels`` given, the second on a log axis with ``log_std``)."""
    layers = np.arange(1, result.depth + 1)
    (first, _), (second, _) = panels
    ax_mean.plot(layers, getattr(result, first), "ob-", label="measured")
    ax_std.plot(layers, getattr(result, second), "or-", label="measured")
    for label, source in overlay.items():
        for ax, (field, _) in zip((ax_mean, ax_std), panels, strict=True):
            values = _series(source, field, result.depth, f"overlay[{label!r}]")
            if values is not None:
                ax.plot(layers, values, "--", marker="x", label=str(label))
    for ax, (field, title) in zip((ax_mean, ax_std), panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylabel(field)
        ax.set_xticks(layers if result.depth <= 20 else ax.get_xticks())
        ax.set_xlim(0.5, result.depth + 0.5)
        ax.grid(True, alpha=0.3)
        if overlay:
            ax.legend(fontsize="small")
    if log_std:
        ax_std.set_yscale("log")
        if panels is _GRAD_PANELS:  # both span decades in a vanishing or exploding network
            ax_mean.set_yscale("log")


def _number(value: float) -> str:
    """As matplotlib writes tick labels, with a true minus sign."""
    return f"{value:g}".replace("-", "\N{MINUS SIGN}")


def _percent(count: int, total: int) -> str:
    share = 100.0 * count / total
    return f"{share:.2g} %" if share < 10 else f"{share:.0f} %"


def _draw_histogram(
    ax: Axes,
    counts: NDArray[np.int64],
    edges: NDArray[np.float64],
    *,
    below: int,
    above: int,
    nonfinite: int,
    total: int,
    title: str,
) -> None:
    """One layer's histogram, with what fell outside its range written on it."""
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", linewidth=0)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(title, fontsize="medium")
    low, middle, high = (_number(v) for v in (edges[0], 0.5 * (edges[0] + edges[-1]), edges[-1]))
    ax.set_xticks([edges[0], 0.5 * (edges[0] + edges[-1]), edges[-1]])
    ax.set_xticklabels([low, middle, high])
    # the range's ends sit on the frame: keep them inside it, clear of the neighbour's
    ends = ax.get_xticklabels()
    ends[0].set_horizontalalignment("left")
    ends[-1].set_horizontalalignment("right")
    # a saturated or exploding layer must not look like a quiet one: say what is cut off
    notes = []
    if below:
        notes.append(f"< {low}: {_percent(below, total)}")
    if above:
        notes.append(f"> {high}: {_percent(above, total)}")
    if nonfinite:
        notes.append(f"NaN/inf: {_percent(nonfinite, total)}")
    # below the axis rather than on it, so that no bar is hidden
    ax.set_xlabel("\n".join(notes), fontsize="small", color="C3")


def _draw_histogram_grid(
    container: Any, result: PropagationResult, layers: list[int], gradients: bool = False
) -> list[Axes]:
    """The histograms of ``layers`` in rows of up to five, on ``container`` or given Axes:
    of the activations, or with ``gradients`` of the back-propagated gradients."""
    from matplotlib.ticker import EngFormatter

    if is_container(container):
        columns = min(len(layers), _HIST_COLUMNS)
        rows = math.ceil(len(layers) / columns)
        grid = container.subplots(rows, columns, sharey=True, squeeze=False)
        axes = list(grid.ravel())
        for spare in axes[len(layers) :]:
            spare.set_visible(False)
        axes = axes[: len(layers)]
        for row in range(rows):
            grid[row, 0].set_ylabel("count")
    else:
        axes = container
    prefix = "grad_" if gradients else ""
    hist, edges = getattr(result, f"{prefix}hist"), getattr(result, f"{prefix}bin_edges")
    below, above = getattr(result, f"{prefix}below"), getattr(result, f"{prefix}above")
    nonfinite = getattr(result, f"{prefix}nonfinite")
    for ax, layer in zip(axes, layers, strict=True):
        i = layer - 1
        _draw_histogram(
            ax,
            hist[i],
            edges,
            below=int(below[i]),
            above=int(above[i]),
            nonfinite=int(nonfinite[i]),
            total=result.n_samples * result.widths[i],
            title=f"layer {layer}" + (" dL/dh" if gradients else ""),
        )
        # counts reach millions: "250k" is shorter than an offset label over the title
        ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    return axes


def _check_gradients(result: PropagationResult, gradients: Any) -> bool:
    if not isinstance(gradients, bool | np.bool_):
        raise TypeError(f"gradients must be True or False, got {gradients!r}")
    if gradients and not result.has_gradients:
        raise ValueError(
            "gradients=True draws the gradients of a run with them: run propagate(..., "
            "gradients=True)"
        )
    return bool(gradients)


def plot_result(
    result: PropagationResult,
    *,
    ax: Any = None,
    layers: Any = None,
    log_std: bool = False,
    overlay: Mapping[str, Any] | None = None,
    gradients: bool = False,
) -> Figure:
    """The classic experiment's figures for one run (see :meth:`PropagationResult.plot`)."""
    result = _check_result(result)
    picked = _layer_numbers(layers, result.depth)
    grads = _check_gradients(result, gradients)
    panels = _GRAD_PANELS if grads else _PANELS
    sources = _check_overlay(overlay, tuple(field for field, _ in panels), result.depth)
    if not isinstance(log_std, bool | np.bool_):
        raise TypeError(f"log_std must be True or False, got {log_std!r}")
    require_matplotlib()
    if ax is None or is_container(ax):
        rows = math.ceil(len(picked) / _HIST_COLUMNS)
        container: Any = new_figure(3.0 + 2.0 * rows) if ax is None else ax
        top, bottom = container.subfigures(2, 1, height_ratios=[3.0, 2.0 * rows])
        ax_mean, ax_std = top.subplots(1, 2)
        _draw_moments(ax_mean, ax_std, result, bool(log_std), sources, panels)
        _draw_histogram_grid(bottom, result, picked, grads)
        if ax is None:
            container.suptitle(_summary(result) + (": gradients" if grads else ""))
        return root(container)
    axes = axes_list(ax, 2 + len(picked))
    _draw_moments(axes[0], axes[1], result, bool(log_std), sources, panels)
    _draw_histogram_grid(axes[2:], result, picked, grads)
    return root(axes[0])


def histograms(
    result: PropagationResult, *, layers: Any = None, ax: Any = None, gradients: bool = False
) -> Figure:
    """One activation histogram per layer, from ``result.hist`` and ``result.bin_edges``.

    Parameters
    ----------
    result
        A :class:`~initscope.PropagationResult`.
    layers
        Layer numbers (1 to depth, or negative from the last) whose histograms to draw;
        default: every layer up to 10, else 10 spread evenly from the first to the last.
    ax
        A Figure or SubFigure to draw the grid in, or one Axes per layer; default: a new
        figure.
    gradients
        Draw the histograms of the back-propagated gradients ``dL/dh`` instead
        (``result.grad_hist`` on ``result.grad_bin_edges``), of a run with gradients.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.  Values outside ``hist_range`` (and NaN or inf) are written on
        each histogram as a share of the layer's entries, so that a saturated or exploding
        layer is not silently cut off.
    """
    result = _check_result(result)
    picked = _layer_numbers(layers, result.depth)
    grads = _check_gradients(result, gradients)
    require_matplotlib()
    if ax is None:
        figure = new_figure(0.4 + 2.0 * math.ceil(len(picked) / _HIST_COLUMNS))
        _draw_histogram_grid(figure, result, picked, grads)
        figure.suptitle(_summary(result) + (": gradients dL/dh" if grads else ""))
        return figure
    if is_container(ax):
        _draw_histogram_grid(ax, result, picked, grads)
        return root(ax)
    axes = axes_list(ax, len(picked))
    _draw_histogram_grid(axes, result, picked, grads)
    return root(axes[0])


def _default_label(result: PropagationResult) -> str:
    return "/".join(dict.fromkeys(result.init_names))


def compare(
    results: Sequence[PropagationResult] | Mapping[str, PropagationResult],
    labels: Sequence[str] | None = None,
    *,
    value: str = "std",
    log: bool = True,
    ax: Any = None,
    overlay: Sequence[Any] | None = None,
) -> Figure:
    """Several runs in one figure: one line per run of a per-layer statistic.

    With the classic experiment's three inits (small, big, xavier) this one picture tells
    the whole story: the signal dies, saturates, or survives.

    Parameters
    ----------
    results
        The runs, or a mapping from label to run.
    labels
        One legend label per run; default: the mapping's keys, else each run's init name.
    value
        The statistic to draw: a per-layer field of the result (``PropagationResult.
        LAYER_FIELDS``: ``"std"``, ``"mean"``, ``"pre_std"``, ``"zero_fraction"``, ...,
        or of runs with gradients, ``GRAD_FIELDS``: ``"grad_std"``, ``"chi1_measured"``...).
    log
        A log y axis; when some values are zero or negative (e.g. ``value="mean"``), a
        symmetric log axis, linear around zero, so that they stay visible.
    ax
        An Axes to draw on; default: a new figure.
    overlay
        One entry per run, drawn dashed in the run's colour: ``None``, or a mapping or an
        object giving ``value`` per layer (e.g. a prediction).

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on.
    """
    from ..result import PropagationResult

    if isinstance(results, Mapping):
        if labels is None:
            labels = [str(key) for key in results]
        runs = list(results.values())
    elif isinstance(results, PropagationResult) or not isinstance(results, Sequence):
        raise TypeError(
            f"results must be a sequence of PropagationResult, got {type(results).__name__}"
        )
    else:
        runs = list(results)
    if not runs:
        raise ValueError("results must hold at least one PropagationResult")
    for i, run in enumerate(runs):
        _check_result(run, f"results[{i}]")
    if labels is None:
        labels = [_default_label(run) for run in runs]
    if isinstance(labels, str) or len(labels) != len(runs):
        raise ValueError(f"labels must give one label per result ({len(runs)}), got {labels!r}")
    fields = (*PropagationResult.LAYER_FIELDS, *PropagationResult.GRAD_FIELDS)
    if value not in fields:
        raise ValueError(
            f"value must be a per-layer field, one of {', '.join(fields)}; got {value!r}"
        )
    for i, run in enumerate(runs):
        if getattr(run, value) is None:
            raise ValueError(f"results[{i}] has no {value!r}: run it with gradients=True")
    if overlay is not None and (isinstance(overlay, Mapping) or len(overlay) != len(runs)):
        raise ValueError(f"overlay must give one entry (or None) per result ({len(runs)})")
    extras = list(overlay) if overlay is not None else [None] * len(runs)
    for i, (run, extra) in enumerate(zip(runs, extras, strict=True)):
        if extra is not None and _series(extra, value, run.depth, f"overlay[{i}]") is None:
            raise ValueError(f"overlay[{i}] gives no {value!r}")
    if not isinstance(log, bool | np.bool_):
        raise TypeError(f"log must be True or False, got {log!r}")
    require_matplotlib()
    axes = single_axes(ax, 4.5)
    finite = []
    for run, label, extra in zip(runs, labels, extras, strict=True):
        layers = np.arange(1, run.depth + 1)
        values = np.asarray(getattr(run, value), dtype=np.float64)
        (line,) = axes.plot(layers, values, "o-", label=str(label))
        finite.append(values[np.isfinite(values)])
        if extra is not None:
            predicted = _series(extra, value, run.depth, "overlay")
            assert predicted is not None  # checked above, before drawing
            axes.plot(layers, predicted, "--", color=line.get_color(), label=f"{label} (overlay)")
    if log:
        present = np.concatenate(finite)
        if present.size and present.min() <= 0:
            positive = np.abs(present[present != 0])
            axes.set_yscale("symlog", linthresh=float(positive.min()) if positive.size else 1.0)
        else:
            axes.set_yscale("log")
    depth = max(run.depth for run in runs)
    if depth <= 20:
        axes.set_xticks(np.arange(1, depth + 1))
    axes.set_xlabel("layer")
    axes.set_ylabel(value)
    networks = {_network(run) for run in runs}
    axes.set_title(f"layer {value}" + (f": {networks.pop()}" if len(networks) == 1 else ""))
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()
    return root(axes)
