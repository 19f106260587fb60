"""Drop-in versions of the classic experiment's functions.

Change ``def forward_prop(...)`` in the classic notebook to
``from initscope.compat import forward_prop`` and the rest of it runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from numpy.typing import NDArray

from .api import propagate

__all__ = ["forward_prop"]


def forward_prop(
    hidden_layer_sizes: Sequence[int],
    weight_init_func: Callable[[int, int], NDArray] | str,
    *,
    n_samples: int = 1000,
    activation: str = "tanh",
    **kwargs: object,
) -> tuple[dict[int, NDArray], list[float], list[float]]:
    """``(hidden_layer_acts, hidden_layer_means, hidden_layer_stds)``, as the classic code returns.

    ``hidden_layer_acts`` maps the layer index (from 0) to its ``(n_samples, width)``
    activations; the means and stds are over all entries of each layer.
    """
    result = propagate(
        list(hidden_layer_sizes),
        init=weight_init_func,
        activation=activation,
        n_samples=n_samples,
        keep_activations=True,
        **kwargs,  # type: ignore[arg-type]
    )
    assert result.activations is not None
    acts = dict(enumerate(result.activations))
    return acts, [float(m) for m in result.mean], [float(s) for s in result.std]
