"""Structured matrices (orthogonal, identity, sparse) and user callables: schemes built as
whole matrices in NumPy and handed to the kernels."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .. import random as _random
from .._checks import float_dtype
from .base import Distribution, Scheme, check_real, check_shape, draw, set_checked

# ---- structured matrices ----------------------------------------------------------------------


@dataclass(frozen=True)
class orthogonal(Scheme):
    """A (semi-)orthogonal matrix times ``gain``, Haar-distributed (Saxe et al. 2013).

    As ``torch.nn.init.orthogonal_(w, gain)``, in torch's ``(out, in)`` layout: the normal
    matrix ``A`` (shape ``(fan_out, fan_in)``, transposed if it has fewer rows than columns)
    is factored ``A = QR``, the columns of ``Q`` are multiplied by ``sign(diag(R))``
    (Mezzadri 2007; a zero counts as +1) so that ``Q`` is uniform, ``Q`` is transposed back
    and scaled by ``gain``.  Returned in our ``(fan_in, fan_out)`` layout, the transpose of
    torch's, so ``W @ W.T = gain² I`` when ``fan_in <= fan_out`` and ``W.T @ W = gain² I``
    otherwise.  ``A[o, i]`` is normal ``i * fan_out + o`` of stream ``WEIGHTS``, the draw behind
    ``W[i, o]``.  Keras's ``Orthogonal(gain)`` has the same distribution.

    Parameters
    ----------
    gain : float
        Scaling factor (any finite number, as in torch).
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        set_checked(self, gain=check_real("orthogonal", "gain", self.gain))

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        check_shape(fan_in, fan_out)
        dtype_ = float_dtype(dtype)
        g = _random.normal(seed, _random.WEIGHTS, layer, 0, fan_in * fan_out, dtype_)
        g = g.reshape(fan_in, fan_out).astype(np.float64)  # QR in float64, as precise as it gets
        # torch's A is g.T, (fan_out, fan_in); it factors the tall one of A and A.T
        tall = g.T if fan_out >= fan_in else g
        q, r = np.linalg.qr(tall)
        q *= np.where(np.diagonal(r) < 0, -1.0, 1.0)
        w = q.T if fan_out >= fan_in else q  # torch's Q is q or q.T; ours is its transpose
        return np.ascontiguousarray(w * self.gain, dtype=dtype_)


@dataclass(frozen=True)
class identity(Scheme):
    """``gain`` on the diagonal, zeros elsewhere, for any (rectangular) shape.

    As ``torch.nn.init.eye_`` (times ``gain``) and Keras ``Identity(gain)``: ``W[i, i] = gain``
    for ``i < min(fan_in, fan_out)``.  The transpose of an identity is an identity, so both
    layouts agree.

    Parameters
    ----------
    gain : float
        The diagonal value.
    """

    gain: float = 1.0

    def __post_init__(self) -> None:
        set_checked(self, gain=check_real("identity", "gain", self.gain))

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        check_shape(fan_in, fan_out)
        dtype_ = float_dtype(dtype)
        return np.eye(fan_in, fan_out, dtype=dtype_) * dtype_.type(self.gain)


@dataclass(frozen=True)
class sparse(Scheme):
    """N(0, std²) weights with a fraction ``sparsity`` of each unit's inputs set to zero.

    As ``torch.nn.init.sparse_(w, sparsity, std)`` (Martens 2010): in torch's ``(out, in)``
    layout each column gets ``ceil(sparsity * out)`` zeros at random rows.  In our
    ``(fan_in, fan_out)`` layout: each row ``i`` has exactly ``ceil(sparsity * fan_out)``
    zeros.  The other weights are those of ``normal(0, std)``; the zeros of row ``i`` are at
    the columns of its ``n`` smallest float64 uniforms ``i * fan_out + c`` of stream ``AUX``
    (a uniformly random subset; same positions in float32 and float64).

    Parameters
    ----------
    sparsity : float
        Fraction of zeros in each row, in ``[0, 1)``.
    std : float
        Std of the non-zero weights, ``>= 0``.
    """

    sparsity: float
    std: float = 0.01

    def __post_init__(self) -> None:
        sparsity = check_real("sparse", "sparsity", self.sparsity)
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparse: sparsity must be in [0, 1), got {sparsity}")
        set_checked(self, sparsity=sparsity, std=check_real("sparse", "std", self.std, low=0.0))

    def zeros_per_row(self, fan_out: int) -> int:
        """Zeros in each row of our layout (each column of torch's): ``ceil(sparsity * out)``."""
        return math.ceil(self.sparsity * fan_out)

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        check_shape(fan_in, fan_out)
        dtype_ = float_dtype(dtype)
        dist = Distribution("normal", 0.0, self.std)
        w = draw(
            dist, (fan_in, fan_out), seed=seed, stream=_random.WEIGHTS, layer=layer, dtype=dtype_
        )
        n_zero = self.zeros_per_row(fan_out)
        if n_zero:
            keys = _random.uniform(seed, _random.AUX, layer, 0, fan_in * fan_out, np.float64)
            order = np.argsort(keys.reshape(fan_in, fan_out), axis=1, kind="stable")
            np.put_along_axis(w, order[:, :n_zero], dtype_.type(0.0), axis=1)
        return w


# ---- user callables ------------------------------------------------------------------------


@dataclass(frozen=True)
class from_callable(Scheme):
    """A user function ``f(fan_in, fan_out) -> ndarray``, exactly like the seed's init functions."""

    func: Callable[[int, int], NDArray]

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", "callable")

    def sample(
        self, fan_in: int, fan_out: int, *, seed: int = 0, layer: int = 0, dtype: object = "float64"
    ) -> NDArray:
        w = self.func(fan_in, fan_out)
        if not isinstance(w, np.ndarray):
            raise TypeError(
                f"init function {self.name} must return a numpy array, got {type(w).__name__}"
            )
        if w.shape != (fan_in, fan_out):
            raise ValueError(
                f"init function {self.name} returned shape {w.shape} for layer {layer}, "
                f"expected (fan_in, fan_out) = ({fan_in}, {fan_out})"
            )
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise TypeError(f"init function {self.name} returned dtype {w.dtype}, expected floats")
        w = np.ascontiguousarray(w, dtype=float_dtype(dtype))
        if not np.all(np.isfinite(w)):
            raise ValueError(f"init function {self.name} returned NaN or inf for layer {layer}")
        return w
