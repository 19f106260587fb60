"""The Numba backend's backward pass (``gradients=True``) and its forward ``phi'(h)`` sums.

Against a backward pass written out here with textbook derivatives (so that the reference is
not the only oracle), against torch.autograd where torch is installed, against the NumPy
reference for every activation and both dtypes, bit for bit across thread counts and chunk
sizes, bit for bit against the C++ kernel where it is built.  Its memory (weights that do not
fit the cache included) is measured in test_numba.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

numba = pytest.importorskip("numba")

import initscope  # noqa: E402
import invariance  # noqa: E402
from initscope.activations import ACTIVATIONS, activation  # noqa: E402
from initscope.backends import numba as jit  # noqa: E402

FORWARD = (*initscope.PropagationResult.LAYER_FIELDS, "hist")
GRADS = (*initscope.PropagationResult.GRAD_FIELDS, "grad_hist", "grad_range")
#: Every array of a result with gradients.
EVERYTHING = (*FORWARD, *GRADS)


def assert_identical(a, b, names=EVERYTHING) -> None:
    for name in names:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64 if values.dtype == np.float64 else np.uint32)


def _core():
    if "cpp" not in initscope.available_backends():
        pytest.skip("initscope._core is not built here")
    from initscope import _core

    return _core


# ---- the derivatives ---------------------------------------------------------------------


def _points(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(11)
    top = 800.0 if dtype == "float64" else 110.0
    tails = np.geomspace(1e-30, top, 400)
    edges = [0.0, -0.0, np.nan, np.inf, -np.inf, 40.0, -40.0, 60.0, -60.0]
    x = np.concatenate([tails, -tails, rng.uniform(-40, 40, 2000), rng.standard_normal(500),
                        edges])  # fmt: skip
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_derivative_follows_the_reference(name, dtype):
    """Within a few ulp of Activation.derivative, with its NaN and its values at +-inf."""
    x = _points(dtype)
    act = activation(name)
    got = jit.derive(act, x)
    want = act.derivative(x)
    assert got.dtype == want.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), "NaNs differ")
    finite = np.isfinite(x)
    np.testing.assert_array_equal(got[~finite], want[~finite])
    # float32 values rounded once from float64 differ by at most one rounding (tanh's and
    # sigmoid's, evaluated in float32 as the activations, by 4 ulp); float64 ones by the exp
    # polynomial's 4 ulp, erfc's, and cancellation near a zero of silu' and gelu' (values
    # are O(1), so an absolute bound)
    eps = np.finfo(dtype).eps
    in_dtype = name in ("tanh", "sigmoid")
    rtol, atol = (4 * eps, 1e-15) if dtype == "float64" else ((4 if in_dtype else 1) * eps, 1e-30)
    np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=atol)


def test_derivative_is_bit_identical_to_the_cpp_kernel():
    core = _core()
    for dtype in ("float32", "float64"):
        x = _points(dtype)
        for name in ACTIVATIONS:
            act = activation(name, 0.3) if name in ("leaky_relu", "elu") else activation(name)
            want = core.testing.derive(act.code, act.param, x)
            np.testing.assert_array_equal(bits(jit.derive(act, x)), bits(want), f"{name} {dtype}")


@pytest.mark.parametrize(
    ("name", "derivative"),
    [
        ("tanh", lambda h: 1.0 / np.cosh(h) ** 2),
        ("sigmoid", lambda h: np.exp(-h) / (1.0 + np.exp(-h)) ** 2),
        ("gelu", lambda h: 0.5 * (1.0 + _erf(h / math.sqrt(2.0)))
         + h * np.exp(-h * h / 2.0) / math.sqrt(2.0 * math.pi)),
        ("selu", lambda h: np.where(h > 0, 1.0507009873554805, 1.7580993408473766 * np.exp(h))),
    ],
)  # fmt: skip
def test_derivative_against_textbook_forms(name, derivative):
    x = np.linspace(-8.0, 8.0, 1601)
    np.testing.assert_allclose(jit.derive(activation(name), x), derivative(x), rtol=1e-13,
                               atol=1e-16)  # fmt: skip


def _erf(x: np.ndarray) -> np.ndarray:
    return np.array([math.erf(v) for v in x])


# ---- against a backward pass written out here -------------------------------------------

#: phi and phi' in textbook form (float64), for the hand-written backward pass.
TEXTBOOK = {
    "linear": (lambda h: h, lambda h: np.ones_like(h)),
    "tanh": (np.tanh, lambda h: 1.0 / np.cosh(h) ** 2),
    "relu": (lambda h: np.maximum(h, 0.0), lambda h: (h > 0).astype(np.float64)),
    "sigmoid": (lambda h: 1 / (1 + np.exp(-h)), lambda h: np.exp(-h) / (1 + np.exp(-h)) ** 2),
    "silu": (
        lambda h: h / (1 + np.exp(-h)),
        lambda h: 1 / (1 + np.exp(-h)) + h * np.exp(-h) / (1 + np.exp(-h)) ** 2,
    ),
}


def _hand_written(widths, init, name, inputs, output_grad, seed):
    """delta_l, dW_l, W_l and phi'(h_l) of a float64 network, from make_weights."""
    phi, dphi = TEXTBOOK[name]
    fan_in = inputs.shape[1]
    a, weights, inputs_of, derivs = inputs, [], [], []
    for i, width in enumerate(widths):
        w = initscope.make_weights(init, fan_in, width, seed=seed, layer=i)
        h = a @ w
        inputs_of.append(a)
        weights.append(w)
        derivs.append(dphi(h))
        a = phi(h)
        fan_in = width
    deltas = [np.empty(0)] * len(widths)
    delta = output_grad * derivs[-1]
    for i in reversed(range(len(widths))):
        deltas[i] = delta
        if i > 0:
            delta = (delta @ weights[i].T) * derivs[i - 1]
    grad_w = [x.T @ d for x, d in zip(inputs_of, deltas, strict=True)]
    return deltas, grad_w, weights, derivs


@pytest.mark.parametrize("name", sorted(TEXTBOOK))
def test_gradients_match_a_hand_written_backward_pass(name):
    widths, init, seed, n = [70, 300, 40], "xavier", 5, 1000  # 300: several dW blocks
    rng = np.random.default_rng(2)
    inputs = rng.standard_normal((n, 50))
    output_grad = rng.standard_normal((n, widths[-1]))
    result = initscope.propagate(widths, init=init, activation=name, inputs=inputs, seed=seed,
                                 gradients=True, output_grad=output_grad, chunk_size=480,
                                 backend="numba", grad_bins=40)  # fmt: skip
    deltas, grad_w, weights, derivs = _hand_written(widths, init, name, inputs, output_grad, seed)
    for i, d in enumerate(deltas):
        scale = d.std()
        np.testing.assert_allclose(result.grad_std[i], scale, rtol=1e-10)
        np.testing.assert_allclose(result.grad_mean[i], d.mean(), rtol=0, atol=1e-10 * scale)
        np.testing.assert_allclose(result.grad_sq_mean[i], np.mean(d * d), rtol=1e-10)
        np.testing.assert_allclose(result.grad_min[i], d.min(), rtol=1e-10)
        np.testing.assert_allclose(result.grad_max[i], d.max(), rtol=1e-10)
        np.testing.assert_allclose(result.weight_grad_std[i], grad_w[i].std(), rtol=1e-10)
        np.testing.assert_allclose(result.weight_grad_norm[i], np.linalg.norm(grad_w[i]),
                                   rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(result.weight_grad_ratio[i], grad_w[i].std() / weights[i].std(),
                                   rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(result.chi1[i], result.weight_var[i] * np.mean(derivs[i] ** 2),
                                   rtol=1e-10)  # fmt: skip
    # the default range: the power of two at or above the first tile's largest |delta|
    largest = max(np.abs(d[: jit.TILE_ROWS]).max() for d in deltas)
    r = 2.0 ** math.ceil(math.log2(largest))
    assert result.grad_range == (-r, r)
    for i, d in enumerate(deltas):
        counts, _ = np.histogram(d, bins=40, range=(-r, r))
        outside = int(np.sum(np.abs(d) > r))  # R holds the first tile, not every sample
        assert result.grad_below[i] + result.grad_above[i] == outside
        assert np.abs(result.grad_hist[i] - counts).sum() <= 2  # a value on an edge at most
    ratios = [np.mean(deltas[i] ** 2) / np.mean(deltas[i + 1] ** 2) * widths[i] / widths[i + 1]
              for i in range(len(widths) - 1)]  # fmt: skip
    np.testing.assert_allclose(result.chi1_measured[:-1], ratios, rtol=1e-10)
    assert np.isnan(result.chi1_measured[-1])


@pytest.mark.parametrize("name", ["tanh", "gelu", "leaky_relu"])
def test_gradients_match_torch_autograd(name):
    torch = pytest.importorskip("torch")
    widths, init, seed, n = [64, 130, 20], "he_uniform", 9, 600
    rng = np.random.default_rng(4)
    inputs = rng.standard_normal((n, 30))
    output_grad = rng.standard_normal((n, widths[-1]))
    result = initscope.propagate(widths, init=init, activation=name, inputs=inputs, seed=seed,
                                 gradients=True, output_grad=output_grad, backend="numba",
                                 threads=2)  # fmt: skip
    fn = {"tanh": torch.tanh, "gelu": torch.nn.functional.gelu,
          "leaky_relu": lambda h: torch.nn.functional.leaky_relu(h, 0.01)}[name]  # fmt: skip
    a = torch.from_numpy(inputs)
    hs, ws = [], []
    fan_in = inputs.shape[1]
    for i, width in enumerate(widths):
        w = torch.from_numpy(initscope.make_weights(init, fan_in, width, seed=seed, layer=i))
        w.requires_grad_(True)
        h = a @ w
        h.retain_grad()
        hs.append(h)
        ws.append(w)
        a = fn(h)
        fan_in = width
    (a * torch.from_numpy(output_grad)).sum().backward()
    for i in range(len(widths)):
        delta = hs[i].grad.numpy()
        grad_w = ws[i].grad.numpy()
        np.testing.assert_allclose(result.grad_std[i], delta.std(), rtol=1e-10)
        np.testing.assert_allclose(result.grad_max[i], delta.max(), rtol=1e-10)
        np.testing.assert_allclose(result.weight_grad_norm[i], np.linalg.norm(grad_w),
                                   rtol=1e-10)  # fmt: skip
        np.testing.assert_allclose(result.weight_grad_std[i], grad_w.std(), rtol=1e-10)


# ---- against the reference -------------------------------------------------------------------


def assert_gradients_match(result, reference, dtype) -> None:
    """float64: rtol 1e-10; float32: 1e-4, per layer (means relative to the std); a few
    histogram counts may move across an edge."""
    eps = 1e-10 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(result.chi1, reference.chi1, rtol=eps, err_msg="chi1")
    if reference.grad_std is None:
        for name in GRADS:
            assert getattr(result, name) is None, name
        return
    assert result.grad_range == reference.grad_range
    for i in range(len(reference.widths)):
        scale = reference.grad_std[i]
        for name in ("grad_std", "grad_sq_mean", "grad_min", "grad_max"):
            # min and max are single entries, not averages: their float32 rounding compounds
            rtol = 5 * eps if name in ("grad_min", "grad_max") and dtype == "float32" else eps
            np.testing.assert_allclose(getattr(result, name)[i], getattr(reference, name)[i],
                                       rtol=rtol, err_msg=f"{name}[{i}]")  # fmt: skip
        np.testing.assert_allclose(result.grad_mean[i], reference.grad_mean[i], rtol=0,
                                   atol=eps * scale, err_msg=f"grad_mean[{i}]")  # fmt: skip
        for name in ("weight_grad_std", "weight_grad_norm", "weight_grad_ratio"):
            np.testing.assert_allclose(getattr(result, name)[i], getattr(reference, name)[i],
                                       rtol=eps, err_msg=f"{name}[{i}]")  # fmt: skip
        slack = 2 if dtype == "float64" else 10
        assert np.abs(result.grad_hist[i] - reference.grad_hist[i]).sum() <= 2 * slack
        for name in ("grad_below", "grad_above", "grad_nonfinite"):
            assert abs(int(getattr(result, name)[i]) - int(getattr(reference, name)[i])) <= slack
    np.testing.assert_allclose(result.chi1_measured, reference.chi1_measured, rtol=10 * eps)


@pytest.mark.parametrize(("gradients", "given"), [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_activation_matches_the_reference(name, dtype, gradients, given):
    output_grad = np.random.default_rng(1).uniform(-2, 2, (700, 33)) if given else None
    kwargs = dict(init=["xavier", "he_uniform", "orthogonal"], activation=name, dtype=dtype,
                  n_samples=700, input_dim=150, chunk_size=480, bias=0.2, seed=3,
                  gradients=gradients, output_grad=output_grad)  # fmt: skip
    result = initscope.propagate([64, 140, 33], backend="numba", **kwargs)
    reference = initscope.propagate([64, 140, 33], backend="numpy", **kwargs)
    assert_gradients_match(result, reference, dtype)


# ---- bit for bit --------------------------------------------------------------------------

CASES = (
    dict(widths=[65, 33], n_samples=1000, activation="tanh", dtype="float32", bias=0.3),
    dict(widths=[130, 130, 7], n_samples=721, activation="relu", dtype="float64", bias=0.1,
         grad_bins=17),
    dict(widths=[300, 200], n_samples=1500, activation="gelu", dtype="float32",
         grad_range=(-0.5, 0.5)),
    dict(widths=[40, 270, 30], input_dim=260, n_samples=500, activation="silu",
         dtype="float64", init=["xavier", "orthogonal", "he_uniform"]),
)  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case['widths']}-{case['dtype']}")
def test_bit_identical_for_any_chunk_and_thread_count(case):
    results = invariance.results_for_every_split("numba", {**case, "gradients": True})
    for other in results[1:]:
        assert_identical(other, results[0])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bit_identical_to_the_cpp_kernel(dtype):
    """The same tiles, GEMM calls, derivatives, dW blocks and merge order as the C++ kernel
    (150 inputs and width 140: two blocks of dW, a whole one and a short one)."""
    assert jit.GRAD_ROWS == _core().GRAD_ROWS == 128
    rng = np.random.default_rng(8)
    for name in ACTIVATIONS:
        for output_grad in (None, rng.standard_normal((700, 70))):
            kwargs = dict(init=["xavier", "he_uniform", "orthogonal"], activation=name,
                          dtype=dtype, n_samples=700, chunk_size=480, bias=0.2, seed=3,
                          input_dim=150, gradients=True, output_grad=output_grad)  # fmt: skip
            cpp = initscope.propagate([90, 140, 70], backend="cpp", **kwargs)
            assert_identical(initscope.propagate([90, 140, 70], backend="numba", **kwargs), cpp)


# ---- fallbacks and interrupts ----------------------------------------------------------------


def test_numpy_gemm_fallback_matches(monkeypatch):
    """Without scipy-openblas32, the backward pass's GEMMs are NumPy's, on the whole chunk."""
    kwargs = dict(n_samples=500, chunk_size=240, bias=0.3, backend="numba", gradients=True,
                  input_dim=140)  # fmt: skip
    with_blas = initscope.propagate([50, 140, 60], **kwargs)
    monkeypatch.setattr(jit, "_blas", lambda: (0, 0))
    without = initscope.propagate([50, 140, 60], **kwargs)
    for name in (*initscope.PropagationResult.GRAD_FIELDS[:8], "chi1"):
        np.testing.assert_allclose(getattr(without, name), getattr(with_blas, name),
                                   rtol=1e-12, atol=1e-15, err_msg=name)  # fmt: skip


def test_serial_kernels_match(monkeypatch):
    """In a process forked after OpenMP ran, the kernels run serially: the same bits."""
    kwargs = dict(n_samples=700, chunk_size=240, bias=0.1, backend="numba", gradients=True,
                  init=["xavier", "he_uniform"], dtype="float32", threads=2)  # fmt: skip
    parallel = initscope.propagate([64, 140], input_dim=150, **kwargs)
    monkeypatch.setattr(jit, "parallel_allowed", lambda: False)
    assert_identical(initscope.propagate([64, 140], input_dim=150, **kwargs), parallel)


def test_keyboard_interrupt_surfaces_in_the_backward_pass(monkeypatch):
    calls = []
    backward = jit._backward

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return backward(*args)

    monkeypatch.setattr(jit, "_backward", interrupted)
    before = numba.get_num_threads()
    with pytest.raises(KeyboardInterrupt):
        initscope.propagate([16, 16], n_samples=480, chunk_size=240, backend="numba",
                            gradients=True, threads=1)  # fmt: skip
    assert len(calls) == 2
    assert numba.get_num_threads() == before


@pytest.mark.parametrize(
    ("largest", "r"),
    [(0.0, 1.0), (math.nan, 1.0), (0.75, 1.0), (1.0, 1.0), (1.5, 2.0), (3.0, 4.0),
     (2.0**-30, 2.0**-30), (2.0**-30 * 1.0000001, 2.0**-29), (5e-324, 5e-324), (1e300, 2.0**997),
     (2.0**1023, 2.0**1023), (1.7e308, 1.7e308)],
)  # fmt: skip
def test_grad_range_rule(largest, r):
    assert jit.grad_range_rule(largest) == r
