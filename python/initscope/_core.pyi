"""Type stubs of the compiled kernel ``initscope._core`` (sources in ``cpp/``)."""

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

def propagate(
    *,
    n_samples: int,
    input_dim: int,
    seed: int,
    dtype: DTypeLike,
    inputs: NDArray[np.floating] | None,
    layers: list[dict[str, Any]],
    bins: int,
    hist_low: float,
    hist_high: float,
    threads: int,
    chunk_size: int,
    keep_activations: bool,
) -> dict[str, Any]:
    """Run a checked plan; returns the fields of ``initscope.result.RawStats``.

    Each layer is a dict with ``fan_in``, ``fan_out``, ``activation`` (kernel code),
    ``param``, ``saturation`` (``(low, high)`` or None), ``bias_std``, and ``source``:
    ``"given"`` with ``weights`` a ``(fan_in, fan_out)`` array, or ``"normal"`` /
    ``"uniform"`` with ``scale`` and ``shift`` (drawn as ``value * scale + shift``).
    """

def normal(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: DTypeLike = "float64"
) -> NDArray[np.floating]:
    """Standard normals ``start .. start + count - 1`` (as ``initscope.random.normal``)."""

def uniform(
    seed: int, stream: int, layer: int, start: int, count: int, dtype: DTypeLike = "float64"
) -> NDArray[np.floating]:
    """Uniforms on ``[0, 1)`` (as ``initscope.random.uniform``)."""

def philox4x32(
    counter: tuple[int, int, int, int], key: tuple[int, int]
) -> tuple[int, int, int, int]:
    """One Philox4x32-10 block."""

def activate(code: int, param: float, x: NDArray[np.floating]) -> NDArray[np.floating]:
    """The activation with kernel code ``code`` applied to ``x`` (dtype preserved)."""

def blas_info() -> dict[str, Any]:
    """OpenBLAS's configuration and core, and the compiler flags of this module."""
