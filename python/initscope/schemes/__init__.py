"""Weight-initialization schemes, with the formulas of ``torch.nn.init`` and Keras.

A scheme turns ``(fan_in, fan_out)`` into a weight matrix of shape ``(fan_in, fan_out)``,
the layout of the seed experiment's ``X @ W`` (torch stores the transpose,
``(out_features, in_features)``: see :func:`initscope.make_weights`).

Schemes that are a plain normal or uniform distribution say so through
:meth:`Scheme.distribution`; the kernels then draw them in place from the counter-based
generator.  Schemes that need the whole matrix (orthogonal, sparse, truncated normals,
identity, user callables) are built here by :meth:`Scheme.sample`, in NumPy, from the same
generator, and handed to the kernels.

Every random number comes from :mod:`initscope.random`: element ``r * fan_out + c`` of the
stream ``WEIGHTS`` (layer ``layer``) is the draw behind ``W[r, c]``; schemes that need more
draws (truncation retries, sparse masks) take them from the stream ``AUX`` of the same layer.

Parameters are checked when a scheme is built: a bad one raises ``TypeError`` (not a real
number) or ``ValueError`` (out of range, not finite, unknown name), naming the parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

from .base import (
    KERAS_TRUNCATED_STD,
    MIN_ACCEPTANCE,
    MODES,
    NONLINEARITIES,
    Distribution,
    Scheme,
    calculate_gain,
    draw,
    fan,
)
from .families import (
    big,
    constant,
    glorot_normal,
    glorot_uniform,
    he_normal,
    he_uniform,
    lecun_normal,
    lecun_uniform,
    normal,
    ones,
    small,
    uniform,
    xavier,
    zeros,
)
from .structured import from_callable, identity, orthogonal, sparse
from .truncated import truncated_normal, truncated_normal_keras, truncation_method, variance_scaling

__all__ = [
    "KERAS_TRUNCATED_STD",
    "MIN_ACCEPTANCE",
    "MODES",
    "NONLINEARITIES",
    "SCHEMES",
    "Distribution",
    "Scheme",
    "big",
    "calculate_gain",
    "constant",
    "draw",
    "fan",
    "from_callable",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "identity",
    "lecun_normal",
    "lecun_uniform",
    "normal",
    "ones",
    "orthogonal",
    "scheme",
    "small",
    "sparse",
    "truncated_normal",
    "truncated_normal_keras",
    "truncation_method",
    "uniform",
    "variance_scaling",
    "xavier",
    "zeros",
]

# ---- registry --------------------------------------------------------------------------------

#: Scheme names accepted by ``init=``, each with its default parameters.  Names follow torch
#: (``kaiming_normal``, ``trunc_normal``, ``eye``) and Keras (``random_normal`` and
#: ``random_uniform`` with Keras's defaults, std 0.05 and ±0.05); ``sparse`` has sparsity 0.1.
SCHEMES: Final[dict[str, Callable[[], Scheme]]] = {
    "zeros": zeros,
    "ones": ones,
    "constant": constant,
    "normal": normal,
    "uniform": uniform,
    "random_normal": functools.partial(normal, 0.0, 0.05),
    "random_uniform": functools.partial(uniform, -0.05, 0.05),
    "small": small,
    "big": big,
    "xavier": xavier,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "xavier_normal": glorot_normal,
    "xavier_uniform": glorot_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform,
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "truncated_normal": truncated_normal,
    "trunc_normal": truncated_normal,
    "truncated_normal_keras": truncated_normal_keras,
    "variance_scaling": variance_scaling,
    "orthogonal": orthogonal,
    "identity": identity,
    "eye": identity,
    "sparse": functools.partial(sparse, 0.1),
}

# factories that users may pass uncalled, like the seed's functions: init=schemes.small
_FACTORIES: Final = (zeros, ones, small, big)


def scheme(init: object) -> Scheme:
    """Resolve ``init``: a scheme name, a :class:`Scheme`, or a callable ``f(fan_in, fan_out)``.

    A scheme class or factory passed uncalled (``init=schemes.orthogonal``,
    ``init=schemes.small``) means its defaults.
    """
    if isinstance(init, Scheme):
        return init
    if isinstance(init, str):
        try:
            factory = SCHEMES[init]
        except KeyError:
            raise ValueError(
                f"init {init!r} is unknown; choose one of {', '.join(sorted(SCHEMES))}"
            ) from None
        return factory()
    if isinstance(init, type) and issubclass(init, Scheme) and init not in (Scheme, from_callable):
        return init()
    if any(init is f for f in _FACTORIES):
        return init()  # type: ignore[operator]
    if callable(init):
        return from_callable(init)
    raise TypeError(
        f"init must be a scheme name, a Scheme or a callable f(fan_in, fan_out), "
        f"got {type(init).__name__}"
    )
