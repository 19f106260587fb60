"""The public entry points: :func:`propagate` and :func:`make_weights`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .backends import get_backend
from .plan import estimate_memory, make_plan
from .result import PropagationResult
from .schemes import scheme

__all__ = ["make_weights", "propagate"]


def _machine_memory() -> int:
    try:
        import os

        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 2**34


def propagate(
    widths: Sequence[int],
    *,
    init: Any = "xavier",
    activation: Any = "tanh",
    n_samples: int = 1000,
    input_dim: int | None = None,
    inputs: NDArray | None = None,
    bias: float | Sequence[float] = 0.0,
    seed: int = 0,
    dtype: str = "float64",
    bins: int = 30,
    hist_range: tuple[float, float] = (-1.0, 1.0),
    backend: str = "auto",
    threads: int | None = None,
    chunk_size: int | None = None,
    keep_activations: bool = False,
    max_memory: int | None = None,
    gradients: bool = False,
    output_grad: NDArray | None = None,
    grad_bins: int | None = None,
    grad_range: tuple[float, float] | None = None,
) -> PropagationResult:
    """Push random inputs through a deep dense network and return each layer's statistics.

    Layer ``l`` computes ``X_{l+1} = act_l(X_l @ W_l + b_l)`` with ``W_l`` of shape
    ``(fan_in, fan_out)`` drawn by the init scheme, as in the classic experiment.

    Parameters
    ----------
    widths
        The hidden layer sizes, e.g. ``[500] * 10``.
    init
        A scheme name (``"xavier"``, ``"he_normal"``, ...: see ``initscope.schemes.SCHEMES``),
        a scheme object (``initscope.schemes.normal(std=0.01)``), a callable
        ``f(fan_in, fan_out) -> ndarray``, or a list with one of these per layer.
    activation
        A name (see ``initscope.ACTIVATIONS``), an ``Activation``, a ``(name, param)`` pair,
        or a list with one per layer.
    n_samples
        Number of input samples, drawn from N(0, 1); ignored when ``inputs`` is given.
    input_dim
        Size of each input sample; defaults to ``widths[0]`` (or to ``inputs.shape[1]``).
    inputs
        An optional ``(n_samples, input_dim)`` array used instead of generated inputs.
    bias
        σ_b: biases drawn from N(0, σ_b²); 0 (the default) means no bias.  One per layer
        or one for all.
    seed
        Seed of the counter-based generator, in ``[0, 2**64)``.
    dtype
        ``"float32"`` or ``"float64"``: the dtype of the weights, activations and GEMM;
        statistics are always accumulated in float64.
    bins, hist_range
        The per-layer histogram of post-activation values.
    backend
        ``"auto"`` (cpp, then numba, then numpy), ``"cpp"``, ``"numba"`` or ``"numpy"``.
    threads
        Threads to use (default: the CPUs this process may run on).  Results are
        bit-identical for any number of threads.
    chunk_size
        Samples held in memory at once (default: as many as fit in about 128 MB, but at
        least min(widest layer, 4096): weights too large to keep are drawn again per chunk).
    keep_activations
        Keep every layer's post-activation array in ``result.activations``.
    max_memory
        Refuse a run whose estimated memory exceeds this many bytes (default: 3/4 of the
        machine's memory).
    gradients
        Also back-propagate an output gradient ``g = dL/da_L`` through the network:
        ``delta_L = g * act'(h_L)``, ``delta_{l-1} = (delta_l @ W_l.T) * act'(h_{l-1})``
        in the run's dtype, and the weight gradients ``dL/dW_l = a_{l-1}.T @ delta_l``
        summed over the samples.  The result then holds ``grad_mean``, ``grad_std``,
        ``grad_hist``, ``weight_grad_std``, ``chi1_measured`` and the other gradient fields.

        Memory: the backward pass needs what the forward pass of a chunk computed, so the
        compiled backends keep, per chunk, every layer's input and ``act'(h_l)`` (which
        ``delta_l`` overwrites) and the output gradient, about ``2L + 1`` arrays of
        ``chunk_size x`` the widest layer in the run's dtype, in place of the forward pass's
        two; the
        weights of every layer while they fit the kernel's weight cache (else they are drawn
        again for the backward pass); and the weight-gradient accumulators, every layer's
        ``fan_in x fan_out`` when the run has several chunks, the largest one's when it has
        one.  The default ``chunk_size`` shrinks accordingly (about 128 MB for all
        ``2L + 2`` buffers, but at least min(widest layer, 4096) rows: a deep wide network
        may need a smaller ``chunk_size``).  The NumPy reference holds every layer's arrays
        over all samples.  The memory estimate that ``max_memory`` is checked against
        counts all of it.
    output_grad
        The output gradient, an ``(n_samples, widths[-1])`` array of finite reals; default:
        i.i.d. N(0, 1) from the seed's own stream for gradients.  Needs ``gradients=True``.
    grad_bins
        Bins of the gradient histograms (default: ``bins``).
    grad_range
        ``(low, high)`` of the gradient histograms, the same for every layer.  Default:
        ``(-R, R)`` with ``R`` the power of two at or above the largest finite ``|delta_l|``
        over all layers and the first 240 samples (so that it does not depend on the chunk
        size or the threads); the range used is ``result.grad_range``.

    Returns
    -------
    PropagationResult
        Per-layer ``mean``, ``std``, ``min``, ``max``, ``pre_mean``, ``pre_std``,
        ``hist``, fractions, per-unit figures and ``chi1``, and with ``gradients`` the
        gradient statistics; ``print(result)`` prints the seed's table (and the gradients'
        under it).
    """
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
        bins=bins,
        hist_range=hist_range,
        threads=threads,
        chunk_size=chunk_size,
        keep_activations=keep_activations,
        gradients=gradients,
        output_grad=output_grad,
        grad_bins=grad_bins,
        grad_range=grad_range,
        build_weights=False,
    )
    name, module = get_backend(backend)
    limit = _machine_memory() * 3 // 4 if max_memory is None else int(max_memory)
    need = estimate_memory(plan, backend=name)
    if need > limit:
        raise ValueError(
            f"this run needs about {need / 2**20:.0f} MiB, more than max_memory = "
            f"{limit / 2**20:.0f} MiB: lower chunk_size, n_samples, widths or bins, "
            f"set keep_activations=False, or raise max_memory"
        )
    plan = plan.with_weights()
    raw = module.run(plan)
    return PropagationResult.from_raw(plan, raw, name)


def make_weights(
    init: Any,
    fan_in: int,
    fan_out: int,
    *,
    seed: int = 0,
    layer: int = 0,
    dtype: str = "float64",
    layout: Literal["in_out", "torch"] = "in_out",
) -> NDArray:
    """The weight matrix :func:`propagate` uses for layer ``layer`` and ``seed``.

    Returned with shape ``(fan_in, fan_out)``, the layout of the seed's ``X @ W``.
    ``layout="torch"`` gives the transpose, ``(fan_out, fan_in)``, as
    ``torch.nn.Linear.weight`` stores it: ``linear.weight.data[:] = torch.from_numpy(W)``.
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < 2**32:
        raise ValueError(f"layer must be an integer in [0, 2**32), got {layer!r}")
    if layout not in ("in_out", "torch"):
        raise ValueError(f"layout must be 'in_out' or 'torch', got {layout!r}")
    plan = make_plan(
        [fan_out],
        init=init,
        input_dim=fan_in,
        seed=seed,
        dtype=dtype,
        n_samples=1,
        build_weights=False,
    )
    w = scheme(init).sample(fan_in, fan_out, seed=plan.seed, layer=layer, dtype=plan.dtype)
    return np.ascontiguousarray(w.T) if layout == "torch" else w
