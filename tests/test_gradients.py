"""Back-propagated gradients and chi1: against a backward pass written out here, against
torch.autograd, against mean-field theory, and every backend against the reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import initscope
import invariance
from initscope import random as spec
from initscope.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE
from initscope.plan import CHUNK_BYTES, CHUNK_MIN_ROWS, TILE_ROWS, default_chunk, make_plan
from initscope.schemes import variance_scaling

GELU_C = math.sqrt(2.0 / math.pi)
_erfc = np.vectorize(math.erfc, otypes=[np.float64])

# ---- a backward pass written out from the textbook, independent of initscope's own -------


def forward_and_slope(name: str, param: float, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(phi(h), phi'(h))`` in float64, from the textbook forms, written so that the tails
    keep their relative accuracy (tiny slopes decide on which side of 0 a gradient falls)."""
    s = 1.0 / (1.0 + np.exp(-h))
    s_minus = 1.0 / (1.0 + np.exp(h))  # 1 - s without cancellation
    if name == "linear":
        return h, np.ones_like(h)
    if name == "tanh":
        return np.tanh(h), 1.0 / np.cosh(h) ** 2
    if name == "relu":
        return np.maximum(h, 0.0), (h > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(h > 0, h, param * h), np.where(h > 0, 1.0, param)
    if name == "sigmoid":
        return s, s * s_minus
    if name == "softplus":
        return np.log1p(np.exp(h)), s
    if name == "elu":
        return np.where(h > 0, h, param * np.expm1(h)), np.where(h > 0, 1.0, param * np.exp(h))
    if name == "selu":
        a = SELU_SCALE * np.where(h > 0, h, SELU_ALPHA * np.expm1(h))
        return a, SELU_SCALE * np.where(h > 0, 1.0, SELU_ALPHA * np.exp(h))
    if name == "gelu":
        cdf = 0.5 * _erfc(-h / math.sqrt(2.0))
        return h * cdf, cdf + h * np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)
    if name == "gelu_tanh":
        # 0.5 h (1 + tanh u) = h sigmoid(2u)
        u = GELU_C * (h + 0.044715 * h**3)
        du = GELU_C * (1.0 + 3 * 0.044715 * h * h)
        p, q = 1.0 / (1.0 + np.exp(-2.0 * u)), 1.0 / (1.0 + np.exp(2.0 * u))
        return h * p, p + h * 2.0 * du * p * q
    if name == "silu":
        return h * s, s + h * s * s_minus
    raise AssertionError(name)


def backward_by_hand(x, weights, biases, acts, g):
    """Every layer's ``h``, ``delta = dL/dh`` and ``dW`` of ``L = sum(g * a_L)``, in float64."""
    inputs, hs, slopes = [], [], []
    a = x
    for w, b, (name, param) in zip(weights, biases, acts, strict=True):
        inputs.append(a)
        h = a @ w + b
        a, slope = forward_and_slope(name, param, h)
        hs.append(h)
        slopes.append(slope)
    deltas = [None] * len(weights)
    delta = g * slopes[-1]
    for i in reversed(range(len(weights))):
        deltas[i] = delta
        if i:
            delta = (delta @ weights[i].T) * slopes[i - 1]
    weight_grads = [a.T @ d for a, d in zip(inputs, deltas, strict=True)]
    return hs, slopes, deltas, weight_grads


def network(seed, widths, input_dim, init, bias):
    """The weights (from make_weights) and biases (the BIASES stream) a run uses."""
    weights, biases = [], []
    fan_in = input_dim
    for i, w in enumerate(widths):
        weights.append(initscope.make_weights(init, fan_in, w, seed=seed, layer=i))
        biases.append(spec.normal(seed, spec.BIASES, i, 0, w) * bias)
        fan_in = w
    return weights, biases


def spec_histogram(values, bins, low, high):
    """Bin ``floor((v - low) * (bins / (high - low)))`` of the values in ``[low, high]``, the
    top edge in the last bin: the documented rule (np.histogram differs within an ulp of an
    edge, where tiny gradients near 0 fall)."""
    inside = values[(values >= low) & (values <= high)]
    index = np.minimum(np.floor((inside - low) * (bins / (high - low))).astype(int), bins - 1)
    return np.bincount(index, minlength=bins)


def _close(got, want, rtol, scale, name):
    """``got`` within ``rtol`` of ``want``, or of ``scale`` (a mean near 0: of the std)."""
    atol = rtol * float(np.max(np.nan_to_num(scale)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def assert_gradients_equal(result, deltas, weight_grads, weights, rtol, hist_slack=0):
    """Every gradient field of ``result`` against the arrays of a backward pass."""
    n = result.n_samples
    sq = np.array([np.mean(d * d) for d in deltas])
    std = np.array([d.std() for d in deltas])
    _close(result.grad_mean, [d.mean() for d in deltas], rtol, std, "grad_mean")
    _close(result.grad_std, std, rtol, 0, "grad_std")
    _close(result.grad_sq_mean, sq, rtol, 0, "grad_sq_mean")
    _close(result.grad_min, [d.min() for d in deltas], rtol, std, "grad_min")
    _close(result.grad_max, [d.max() for d in deltas], rtol, std, "grad_max")
    _close(result.weight_grad_std, [dw.std() for dw in weight_grads], rtol, 0, "weight_grad_std")
    norm = [np.linalg.norm(dw) for dw in weight_grads]
    _close(result.weight_grad_norm, norm, rtol, 0, "weight_grad_norm")
    ratio = [dw.std() / w.std() for dw, w in zip(weight_grads, weights, strict=True)]
    _close(result.weight_grad_ratio, ratio, rtol, 0, "weight_grad_ratio")
    widths = np.array(result.widths, dtype=np.float64)
    chi1 = sq[:-1] / sq[1:] * widths[:-1] / widths[1:]
    _close(result.chi1_measured[:-1], chi1, 10 * rtol, 0, "chi1_measured")
    assert np.isnan(result.chi1_measured[-1])
    low, high = result.grad_range
    bins = len(result.grad_bin_edges) - 1
    np.testing.assert_allclose(result.grad_bin_edges, np.linspace(low, high, bins + 1))
    for i, d in enumerate(deltas):
        counts = spec_histogram(d, bins, low, high)
        assert np.abs(result.grad_hist[i] - counts).sum() <= hist_slack, i
        assert abs(int(result.grad_below[i]) - int(np.sum(d < low))) <= hist_slack
        assert abs(int(result.grad_above[i]) - int(np.sum(d > high))) <= hist_slack
        assert result.grad_nonfinite[i] == 0
        assert result.grad_hist[i].sum() + result.grad_below[i] + result.grad_above[i] == (
            n * result.widths[i]
        )


def _case(activation, seed=3, n=37, widths=(6, 9, 5), input_dim=4, bias=0.2):
    rng = np.random.default_rng(seed)
    x = 1.5 * rng.standard_normal((n, input_dim))
    g = rng.standard_normal((n, widths[-1]))
    return dict(
        widths=list(widths), inputs=x, output_grad=g, activation=activation, bias=bias, seed=seed
    )


def _acts(result):
    return list(zip(result.activation_names, result.activation_params, strict=True))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_gradient_field_matches_a_backward_pass_by_hand(backend, activation):
    case = _case(activation)
    result = initscope.propagate(
        case["widths"], inputs=case["inputs"], output_grad=case["output_grad"],
        activation=activation, bias=case["bias"], seed=case["seed"], init="he_uniform",
        gradients=True, grad_bins=12, grad_range=(-1.5, 1.5), backend=backend,
    )  # fmt: skip
    weights, biases = network(case["seed"], case["widths"], 4, "he_uniform", case["bias"])
    _, slopes, deltas, weight_grads = backward_by_hand(
        case["inputs"], weights, biases, _acts(result), case["output_grad"]
    )
    assert result.grad_range == (-1.5, 1.5)
    assert result.grad_hist.shape == (3, 12)
    assert_gradients_equal(result, deltas, weight_grads, weights, rtol=1e-10)
    # the forward chi1 from the same pass: sigma_w^2 mean(phi'(h)^2), he_uniform's sigma_w^2 = 2
    np.testing.assert_allclose(result.weight_var, 2.0, rtol=1e-14)
    np.testing.assert_allclose(result.chi1, [2.0 * np.mean(s * s) for s in slopes], rtol=1e-12)


def test_a_layer_wide_enough_for_column_blocks_matches_a_backward_pass_by_hand(fast_backend):
    """2100 units: the C++ kernel multiplies and gathers it in two blocks of columns, the
    slopes kept for the way back scattered into place; any thread count, the same bits."""
    case = _case("tanh", n=300, widths=(2100, 7), input_dim=9)
    kwargs = dict(
        inputs=case["inputs"], output_grad=case["output_grad"], activation="tanh",
        bias=case["bias"], seed=case["seed"], init="he_uniform", gradients=True,
        grad_bins=12, grad_range=(-1.5, 1.5), backend=fast_backend,
    )  # fmt: skip
    result = initscope.propagate(case["widths"], threads=1, **kwargs)
    weights, biases = network(case["seed"], case["widths"], 9, "he_uniform", case["bias"])
    _, slopes, deltas, weight_grads = backward_by_hand(
        case["inputs"], weights, biases, _acts(result), case["output_grad"]
    )
    assert_gradients_equal(result, deltas, weight_grads, weights, rtol=1e-10)
    np.testing.assert_allclose(result.chi1, [2.0 * np.mean(s * s) for s in slopes], rtol=1e-12)
    invariance.assert_identical([result, initscope.propagate(case["widths"], threads=3, **kwargs)])


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "selu", "leaky_relu"])
def test_float32_runs_match_the_float64_pass_to_float32_accuracy(backend, activation):
    case = _case(activation, n=300, widths=(40, 30, 20), input_dim=25, bias=0.1)
    result = initscope.propagate(
        case["widths"], inputs=case["inputs"], output_grad=case["output_grad"],
        activation=activation, bias=0.1, seed=case["seed"], gradients=True,
        grad_range=(-3.0, 3.0), dtype="float32", backend=backend,
    )  # fmt: skip
    # the float32 weights and biases, in float64: only the pass's rounding differs
    weights = [
        initscope.make_weights("xavier", i, o, seed=case["seed"], layer=k, dtype="float32")
        .astype(np.float64)
        for k, (i, o) in enumerate([(25, 40), (40, 30), (30, 20)])
    ]  # fmt: skip
    biases = [
        spec.normal(case["seed"], spec.BIASES, k, 0, w, np.float32).astype(np.float64)
        * np.float32(0.1)
        for k, w in enumerate(case["widths"])
    ]
    x = case["inputs"].astype(np.float32).astype(np.float64)
    g = case["output_grad"].astype(np.float32).astype(np.float64)
    _, _, deltas, weight_grads = backward_by_hand(x, weights, biases, _acts(result), g)
    total = 300 * sum(case["widths"])
    assert_gradients_equal(result, deltas, weight_grads, weights, 1e-4, hist_slack=total // 2000)


def test_the_default_output_gradient_is_the_grads_stream(backend):
    n, widths = 70, [12, 8]
    drawn = initscope.propagate(widths, n_samples=n, gradients=True, seed=9, backend=backend)
    g = spec.normal(9, spec.GRADS, 0, 0, n * widths[-1]).reshape(n, widths[-1])
    given = initscope.propagate(
        widths, n_samples=n, gradients=True, seed=9, output_grad=g, backend=backend
    )
    for name in (*initscope.PropagationResult.GRAD_FIELDS, "grad_hist", "grad_range"):
        np.testing.assert_array_equal(getattr(drawn, name), getattr(given, name), err_msg=name)
    assert spec.GRADS == 4


def test_gradients_leave_the_forward_statistics_alone(backend):
    kwargs = dict(n_samples=300, bias=0.3, activation="gelu", seed=4, backend=backend)
    plain = initscope.propagate([30, 20, 10], **kwargs)
    with_grads = initscope.propagate([30, 20, 10], gradients=True, **kwargs)
    for name in (*initscope.PropagationResult.LAYER_FIELDS, "hist"):
        np.testing.assert_array_equal(getattr(with_grads, name), getattr(plain, name), name)
    assert plain.grad_std is None and not plain.has_gradients and with_grads.has_gradients


# ---- torch.autograd ------------------------------------------------------------------------


def _torch_activation(torch, name, param):
    f = torch.nn.functional
    return {
        "linear": lambda h: h,
        "tanh": torch.tanh,
        "relu": f.relu,
        "leaky_relu": lambda h: f.leaky_relu(h, negative_slope=param),
        "sigmoid": torch.sigmoid,
        "softplus": f.softplus,
        "elu": lambda h: f.elu(h, alpha=param),
        "selu": f.selu,
        "gelu": lambda h: f.gelu(h, approximate="none"),
        "gelu_tanh": lambda h: f.gelu(h, approximate="tanh"),
        "silu": f.silu,
    }[name]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradients_match_torch_autograd(backend, activation):
    torch = pytest.importorskip("torch")
    case = _case(activation, seed=5, n=50, widths=(8, 11, 7), input_dim=6, bias=0.25)
    init = "glorot_uniform"
    result = initscope.propagate(
        case["widths"], inputs=case["inputs"], output_grad=case["output_grad"],
        activation=activation, bias=0.25, seed=5, init=init, gradients=True,
        grad_range=(-2.0, 2.0), backend=backend,
    )  # fmt: skip
    act = _torch_activation(torch, activation, result.activation_params[0])
    a = torch.from_numpy(case["inputs"])
    linears, hs = [], []
    fan_in = 6
    for i, w in enumerate(case["widths"]):
        linear = torch.nn.Linear(fan_in, w, dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(
                torch.from_numpy(
                    initscope.make_weights(init, fan_in, w, seed=5, layer=i, layout="torch")
                )
            )
            linear.bias.copy_(torch.from_numpy(spec.normal(5, spec.BIASES, i, 0, w) * 0.25))
        h = linear(a)
        h.retain_grad()
        linears.append(linear)
        hs.append(h)
        a = act(h)
        fan_in = w
    loss = (a * torch.from_numpy(case["output_grad"])).sum()  # dL/da_L = output_grad
    loss.backward()
    deltas = [h.grad.numpy() for h in hs]
    weight_grads = [linear.weight.grad.numpy().T for linear in linears]
    weights = [linear.weight.detach().numpy().T for linear in linears]
    assert_gradients_equal(result, deltas, weight_grads, weights, rtol=1e-10)


# ---- the default histogram range ----------------------------------------------------------


def _one_unit(value):
    """A scheme of a 1x1 layer with weight ``value``."""
    return lambda fan_in, fan_out: np.full((fan_in, fan_out), value)


@pytest.mark.parametrize(
    ("grads", "bound"),
    [([0.3, -0.2], 0.5), ([0.5, 0.1], 0.5), ([-0.5000001, 0.1], 1.0), ([3.0, 0.0], 4.0),
     ([0.0, 0.0], 1.0), ([1e-5, 0.0], 2.0**-16), ([-1024.0, 7.0], 1024.0)],
)  # fmt: skip
def test_the_default_range_is_the_power_of_two_at_or_above_the_largest_gradient(
    backend, grads, bound
):
    g = np.array(grads).reshape(2, 1)
    result = initscope.propagate(
        [1], inputs=np.ones((2, 1)), init=_one_unit(1.0), activation="linear",
        output_grad=g, gradients=True, backend=backend,
    )  # fmt: skip
    assert result.grad_range == (-bound, bound)
    np.testing.assert_array_equal(result.grad_bin_edges, np.linspace(-bound, bound, 31))


def test_the_default_range_covers_every_layer_of_the_first_tile_only(backend):
    n = 2 * TILE_ROWS + 17
    g = np.full((n, 1), 0.1)
    g[TILE_ROWS + 3] = 1000.0  # beyond the first tile: counted above the range, not in it
    # layer 2 multiplies the gradient of layer 1 by 3: delta_1 = 3 * g, the largest
    result = initscope.propagate(
        [1, 1], inputs=np.ones((n, 1)), init=[_one_unit(1.0), _one_unit(3.0)],
        activation="linear", output_grad=g, gradients=True, grad_bins=4, backend=backend,
    )  # fmt: skip
    assert result.grad_range == (-0.5, 0.5)  # 2**ceil(log2 0.3)
    assert list(result.grad_above) == [1, 1]
    assert result.grad_max.tolist() == [3000.0, 1000.0]
    assert result.grad_hist.tolist() == [[0, 0, 0, n - 1], [0, 0, n - 1, 0]]
    np.testing.assert_allclose(result.chi1_measured[0], 9.0, rtol=1e-14)


def test_the_default_range_ignores_what_is_not_finite(backend):
    # sample 0 overflows on layer 1 (h = inf) and is NaN on layer 2 (inf * 0): its
    # gradients are NaN; sample 1 gives delta_2 = 3 and delta_1 = 3 * 0
    g = np.array([[2.5], [3.0]])
    result = initscope.propagate(
        [1, 1], inputs=np.array([[1e308], [-1.0]]), init=[_one_unit(10.0), _one_unit(0.0)],
        activation="linear", output_grad=g, gradients=True, backend=backend,
    )  # fmt: skip
    assert result.grad_range == (-4.0, 4.0)
    assert result.grad_nonfinite.tolist() == [1, 1]
    assert result.grad_max.tolist() == [0.0, 3.0]
    assert np.isnan(result.grad_std).all()  # moments of a layer with NaN are NaN


# ---- mean-field consistency: chi1 from the backward pass against the forward statistics ----

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(200)  # weight exp(-z^2 / 2)


def _gauss(f) -> float:
    """E[f(z)] for z ~ N(0, 1)."""
    return float(np.sum(_WEIGHTS * f(_NODES)) / math.sqrt(2.0 * math.pi))


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 2.0])
def test_chi1_measured_agrees_with_mean_field_theory_for_tanh(backend, sigma_w2):
    result = initscope.propagate(
        [1000] * 8, init=variance_scaling(sigma_w2, "fan_in", "untruncated_normal"),
        activation="tanh", n_samples=1000, gradients=True, seed=1, backend=backend,
    )  # fmt: skip
    np.testing.assert_allclose(result.weight_var, sigma_w2)
    for layer in range(2, 6):
        q = result.pre_std[layer]
        predicted = sigma_w2 * _gauss(lambda z, q=q: (1.0 - np.tanh(q * z) ** 2) ** 2)
        assert result.chi1_measured[layer] == pytest.approx(predicted, rel=0.05), layer
        # the forward chi1 of the same layer: the same expectation over the measured h
        assert result.chi1[layer] == pytest.approx(predicted, rel=0.02), layer


# ---- the forward chi1 and the per-layer configuration ----------------------------------------


def test_forward_fields_of_every_run(backend):
    x = np.random.default_rng(2).standard_normal((90, 7)) * 2.0
    init = ["orthogonal", "he_normal", "lecun_uniform"]
    result = initscope.propagate(
        [10, 12, 5], inputs=x, init=init, bias=[0.0, 0.3, 0.1],
        activation=[("leaky_relu", 0.2), "tanh", ("elu", 0.5)], seed=8, backend=backend,
    )  # fmt: skip
    assert result.activation_params == (0.2, 0.0, 0.5)
    np.testing.assert_array_equal(result.bias_std, [0.0, 0.3, 0.1])
    assert result.input_sq_mean == pytest.approx(np.mean(x * x), rel=1e-14)
    shapes = [(7, 10), (10, 12), (12, 5)]
    weights = [
        initscope.make_weights(s, i, o, seed=8, layer=k)
        for k, (s, (i, o)) in enumerate(zip(init, shapes, strict=True))
    ]
    # orthogonal: the matrix's own variance; he_normal: 2; lecun_uniform: U(-l, l) with
    # l^2 = 3 / fan_in, whose variance l^2 / 3 is 1 / fan_in
    np.testing.assert_allclose(result.weight_var, [7 * weights[0].var(), 2.0, 1.0], rtol=1e-13)
    biases = [spec.normal(8, spec.BIASES, k, 0, w) * b
              for k, (w, b) in enumerate([(10, 0.0), (12, 0.3), (5, 0.1)])]  # fmt: skip
    _, slopes, _, _ = backward_by_hand(x, weights, biases, _acts(result), np.zeros((90, 5)))
    want = result.weight_var * np.array([np.mean(s * s) for s in slopes])
    np.testing.assert_allclose(result.chi1, want, rtol=1e-12)
    generated = initscope.propagate([10], n_samples=20, backend=backend)
    assert generated.input_sq_mean == 1.0


def test_chi1_is_nan_where_a_pre_activation_is(backend):
    x = np.array([[np.nan, 1.0], [1.0, 2.0]])
    result = initscope.propagate([3], inputs=x, init="ones", activation="tanh", backend=backend)
    assert result.pre_nonfinite[0] == 3 and math.isnan(result.chi1[0])
    # an infinite h has slope 0 in tanh: chi1 stays finite
    x = np.array([[1e308, 1e308], [1.0, 2.0]])
    w = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 0.0]])  # h = (inf, inf, inf) and (3, 3, 2)
    result = initscope.propagate(
        [3], inputs=x, init=lambda i, o: w, activation="tanh", backend=backend
    )
    assert result.weight_var[0] == pytest.approx(2.0 / 3.0, rel=1e-15)  # 2 * var(w)
    d3, d2 = 1.0 - math.tanh(3.0) ** 2, 1.0 - math.tanh(2.0) ** 2
    assert result.chi1[0] == pytest.approx(2.0 / 3.0 * (2 * d3 * d3 + d2 * d2) / 6, rel=1e-12)


# ---- every backend against the reference; splits -------------------------------------------

GRAD_ARRAYS = (*initscope.PropagationResult.GRAD_FIELDS, "grad_hist")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_backends_agree_with_the_reference(fast_backend, activation, dtype):
    kwargs = dict(
        init="he_uniform", activation=activation, dtype=dtype, n_samples=517, bias=0.3,
        bins=17, grad_bins=23, seed=11, gradients=True,
    )  # fmt: skip
    result = initscope.propagate([64, 48, 33], backend=fast_backend, **kwargs)
    reference = initscope.propagate([64, 48, 33], backend="numpy", **kwargs)
    rtol = 1e-10 if dtype == "float64" else 1e-4
    assert result.grad_range == reference.grad_range
    for name in ("grad_std", "grad_sq_mean", "weight_grad_std", "weight_grad_norm",
                 "weight_grad_ratio", "chi1", "weight_var"):  # fmt: skip
        np.testing.assert_allclose(getattr(result, name), getattr(reference, name), rtol=rtol,
                                   err_msg=name)  # fmt: skip
    _close(result.grad_mean, reference.grad_mean, rtol, reference.grad_std, "grad_mean")
    for name in ("grad_min", "grad_max"):
        _close(getattr(result, name), getattr(reference, name), 5 * rtol, reference.grad_std, name)
    np.testing.assert_allclose(result.chi1_measured, reference.chi1_measured, rtol=10 * rtol)
    slack = 2 if dtype == "float64" else 517 * 64 // 2000
    for name in ("grad_hist", "grad_below", "grad_above", "grad_nonfinite"):
        diff = np.abs(getattr(result, name) - getattr(reference, name)).sum()
        assert diff <= slack, name


@pytest.mark.parametrize("case", invariance.CASES[1:3])
def test_gradients_are_bit_identical_for_any_chunk_and_thread_count(fast_backend, case):
    results = invariance.results_for_every_split(fast_backend, dict(case, gradients=True))
    assert all(r.has_gradients for r in results)
    invariance.assert_identical(results)


def test_a_run_with_several_chunks_equals_one_chunk(backend):
    kwargs = dict(n_samples=1000, gradients=True, activation="silu", seed=2, backend=backend)
    one = initscope.propagate([50, 40], **kwargs)
    split = initscope.propagate([50, 40], chunk_size=240, threads=2, **kwargs)
    for name in GRAD_ARRAYS:
        np.testing.assert_allclose(getattr(split, name), getattr(one, name), rtol=1e-12,
                                   atol=1e-15, err_msg=name)  # fmt: skip


# ---- plans and memory ----------------------------------------------------------------------


def test_plan_fields_and_default_chunk():
    plan = make_plan([300, 200], n_samples=50, gradients=True, bins=17)
    assert plan.gradients and plan.output_grad is None
    assert plan.grad_bins == 17 and plan.grad_range is None
    plan = make_plan([3], n_samples=2, gradients=True, grad_bins=5, grad_range=(-2, 3),
                     output_grad=np.array([[1, 2, 3], [4, 5, 6]]), dtype="float32")  # fmt: skip
    assert plan.grad_bins == 5 and plan.grad_range == (-2.0, 3.0)
    assert plan.output_grad.dtype == np.float32 and plan.output_grad.flags.c_contiguous
    # the input and three layers: 2 * 3 + 2 buffers a row instead of 2
    n = 10**7
    assert CHUNK_BYTES == 2**27 and CHUNK_MIN_ROWS == 4096
    assert default_chunk(n, (500,) * 4, 8) == 70 * TILE_ROWS  # 2**27 / 8000 = 16777 rows
    assert default_chunk(n, (500,) * 4, 8, gradients=True) == 18 * TILE_ROWS  # 4194 rows
    # never fewer than min(width, CHUNK_MIN_ROWS), as without gradients
    assert default_chunk(n, (2048,) * 4, 4, gradients=True) == 9 * TILE_ROWS  # 2048 rows
    # 4096 rows, in whole groups of four tiles: 20000 x 20000 weights make a wide layer
    assert default_chunk(n, (20000,) * 4, 8, gradients=True) == 5 * 4 * TILE_ROWS
    assert make_plan([500] * 3, n_samples=n, gradients=True).chunk_size == 18 * TILE_ROWS
    assert make_plan([500] * 3, n_samples=n).chunk_size == 70 * TILE_ROWS


def test_gradient_memory_follows_the_chunked_layout():
    plan = make_plan([100, 300, 50], input_dim=20, n_samples=1000, chunk_size=480,
                     gradients=True, dtype="float32")  # fmt: skip
    # inputs 20 + 100 + 300, derivatives 100 + 300 + 50, the last output 50, per row
    stack = (20 + 100 + 300 + 100 + 300 + 50 + 50) * 480 * 4
    accumulators = (20 * 100 + 100 * 300 + 300 * 50) * 4  # three chunks: every layer's
    assert plan.gradient_bytes() == stack + accumulators
    one = make_plan([100, 300, 50], input_dim=20, n_samples=1000, gradients=True)
    assert one.chunks == 1
    assert one.gradient_bytes() == 920 * 1000 * 8 + 100 * 300 * 8  # the largest layer's
    assert make_plan([100], n_samples=10).gradient_bytes() == 0
    # drawn weights are kept for the backward pass whenever they fit the cache
    assert one.weight_bytes(10**9) == (20 * 100 + 100 * 300 + 300 * 50) * 8
    assert make_plan([100, 300, 50], input_dim=20, n_samples=1000).weight_bytes(10**9) == (
        2 * 100 * 300 * 8
    )


@pytest.mark.parametrize("backend_name", ["numpy", "cpp", "numba"])
def test_memory_estimates_count_the_backward_pass(backend_name):
    if backend_name not in initscope.available_backends():
        pytest.skip(f"{backend_name} is not available here")
    from initscope.plan import estimate_memory

    kwargs = dict(input_dim=64, n_samples=5000, chunk_size=960)
    forward = estimate_memory(make_plan([256] * 6, **kwargs), backend_name)
    backward = estimate_memory(make_plan([256] * 6, gradients=True, **kwargs), backend_name)
    # what a backward pass must keep at least: every layer's input (64, then 256 five times)
    # and slope (256 six times), per chunk (the C++ kernel: and the output gradient, in
    # place of the forward pass's two buffers; the reference: and every delta, over all
    # samples)
    per_row = 64 + 11 * 256
    extra = {
        "cpp": (per_row + 256 - 2 * 256) * 960,
        "numba": (per_row - 2 * 256) * 960,
        "numpy": 18 * 256 * 5000,
    }[backend_name] * 8
    assert backward - forward >= extra
    # and propagate refuses a run with gradients that the forward pass alone would fit
    with pytest.raises(ValueError, match="max_memory"):
        initscope.propagate([256] * 6, gradients=True, max_memory=(forward + backward) // 2,
                            backend=backend_name, **kwargs)  # fmt: skip


# ---- bad input -----------------------------------------------------------------------------


def _bad(error, match, gradients=True, **kwargs):
    return pytest.param(dict(gradients=gradients, **kwargs), error, match, id=match[:40])


def _grad(value, **kwargs):
    return dict(output_grad=value, **kwargs)


BAD = [
    _bad(ValueError, "output_grad is given but gradients is False", False,
         **_grad(np.zeros((5, 3)))),
    _bad(TypeError, "output_grad must be a numpy", **_grad([[0.0] * 3] * 5)),
    _bad(TypeError, "output_grad must hold real", **_grad(np.zeros((5, 3), complex))),
    _bad(TypeError, "output_grad must hold real numbers", **_grad(np.zeros((5, 3), object))),
    _bad(TypeError, "output_grad must hold real numbers, got", **_grad(np.zeros((5, 3), bool))),
    _bad(ValueError, r"output_grad must have shape \(n_samples, widths\[-1\]\) = \(5, 3\)",
         **_grad(np.zeros((5, 4)))),
    _bad(ValueError, "output_grad must have shape", **_grad(np.zeros(15))),
    _bad(ValueError, "output_grad must have shape ", **_grad(np.zeros((5, 3, 1)))),
    _bad(ValueError, "output_grad has 6 rows but the run has 5 samples", **_grad(np.zeros((6, 3)))),
    _bad(ValueError, "output_grad must be finite", **_grad(np.full((5, 3), np.nan))),
    _bad(ValueError, "output_grad must be finite ", **_grad(np.full((5, 3), np.inf))),
    _bad(ValueError, r"output_grad must be finite \(in float32\)",
         **_grad(np.full((5, 3), 1e300), dtype="float32")),
    _bad(TypeError, "gradients must be True or False", "yes"),
    _bad(TypeError, "gradients must be True or False, got 1", 1),
    _bad(ValueError, "grad_bins must be positive", grad_bins=0),
    _bad(ValueError, "grad_bins must be positive, got -3", grad_bins=-3),
    _bad(ValueError, "grad_bins must be at most", grad_bins=2**31),
    _bad(TypeError, "grad_bins must be an integer", grad_bins=2.5),
    _bad(TypeError, "grad_bins must be an integer, got True", grad_bins=True),
    _bad(ValueError, "grad_range must have low < high", grad_range=(1.0, 1.0)),
    _bad(ValueError, "grad_range must have low < high, got", grad_range=(2.0, -2.0)),
    _bad(ValueError, r"grad_range\[1\] must be finite", grad_range=(0.0, np.nan)),
    _bad(TypeError, r"grad_range\[0\] must be a real", grad_range=("a", 1.0)),
    _bad(TypeError, "grad_range must be a pair", grad_range=5.0),
    _bad(TypeError, r"grad_range must be a pair \(low, high\)", grad_range=(0.0, 1.0, 2.0)),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "error", "match"), BAD)
def test_bad_gradient_arguments_name_the_parameter(backend, kwargs, error, match):
    with pytest.raises(error, match=match):
        initscope.propagate([4, 3], n_samples=5, backend=backend, **kwargs)


def test_bad_arguments_are_refused_before_any_work():
    # a run of petabytes: refused for its argument, not for its memory
    huge = dict(n_samples=10**9, gradients=True, backend="numpy")
    with pytest.raises(ValueError, match="grad_bins"):
        initscope.propagate([10**6] * 50, grad_bins=0, **huge)
    with pytest.raises(ValueError, match="output_grad has 2 rows"):
        initscope.propagate([10**6] * 50, output_grad=np.zeros((2, 10**6)), **huge)


def test_output_grad_rows_follow_the_inputs():
    x = np.ones((7, 3))
    result = initscope.propagate([2], inputs=x, gradients=True, output_grad=np.ones((7, 2)),
                                 n_samples=1000, backend="numpy")  # fmt: skip
    assert result.n_samples == 7
    with pytest.raises(ValueError, match="output_grad has 1000 rows but the run has 7 samples"):
        initscope.propagate([2], inputs=x, gradients=True, output_grad=np.ones((1000, 2)))


# ---- what a result shows -------------------------------------------------------------------


@pytest.fixture(scope="module")
def graded():
    return initscope.propagate([20, 30, 10], n_samples=50, gradients=True, backend="numpy")


def test_print_adds_the_gradient_table(graded):
    lines = str(graded).splitlines()
    assert lines[:3] == [
        "Hidden layer %d had mean %f and std %f" % (i + 1, graded.mean[i], graded.std[i])
        for i in range(3)
    ]
    assert lines[3] == "" and "gradients" in lines[4]
    assert lines[5].split() == ["layer", "grad_mean", "grad_std", "weight_grad_std",
                                "weight_grad_ratio", "chi1_measured"]  # fmt: skip
    assert len(lines) == 9
    for i, row in enumerate(lines[6:]):
        cells = row.split()
        assert int(cells[0]) == i + 1
        values = [float(c) for c in cells[1:]]
        want = [graded.grad_mean[i], graded.grad_std[i], graded.weight_grad_std[i],
                graded.weight_grad_ratio[i], graded.chi1_measured[i]]  # fmt: skip
        np.testing.assert_allclose(values, want, rtol=1e-4)
    plain = initscope.propagate([20, 30, 10], n_samples=50, backend="numpy")
    assert len(str(plain).splitlines()) == 3


def test_to_dict_holds_the_gradients_as_json(graded):
    data = json.loads(json.dumps(graded.to_dict(), allow_nan=False))
    assert data["gradients"] is True
    for name in initscope.PropagationResult.GRAD_FIELDS:
        assert len(data[name]) == 3, name
    assert data["chi1_measured"][-1] is None  # NaN
    assert data["grad_range"] == list(graded.grad_range)
    assert np.array(data["grad_hist"]).shape == (3, 30)
    assert len(data["grad_bin_edges"]) == 31
    np.testing.assert_allclose(data["grad_std"], graded.grad_std)
    np.testing.assert_allclose(data["chi1"], graded.chi1)
    np.testing.assert_allclose(data["weight_var"], 1.0, rtol=1e-15)  # xavier: 1 / fan_in
    assert data["bias_std"] == [0.0] * 3
    assert data["input_sq_mean"] == 1.0 and data["activation_params"] == [0.0] * 3
    plain = initscope.propagate([4], n_samples=5, backend="numpy").to_dict()
    assert plain["gradients"] is False and "grad_std" not in plain and "chi1" in plain


def test_to_frame_has_the_gradient_columns(graded):
    pytest.importorskip("pandas")
    frame = graded.to_frame()
    for name in initscope.PropagationResult.GRAD_FIELDS:
        np.testing.assert_array_equal(frame[name].to_numpy(), getattr(graded, name), name)
    assert frame["grad_hist"].iloc[1].tolist() == graded.grad_hist[1].tolist()
    np.testing.assert_array_equal(frame["chi1"], graded.chi1)
    np.testing.assert_array_equal(frame["weight_var"], graded.weight_var)
    plain = initscope.propagate([4], n_samples=5, backend="numpy").to_frame()
    assert "grad_std" not in plain and "chi1" in plain


# ---- pictures ------------------------------------------------------------------------------


def test_plot_draws_the_gradients(graded):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from initscope import plot

    try:
        figure = graded.plot(gradients=True, log_std=True)
        axes = [ax for ax in figure.get_axes() if ax.get_visible()]
        assert len(axes) == 2 + 3
        std_line = axes[0].get_lines()[0]
        np.testing.assert_array_equal(std_line.get_ydata(), graded.grad_std)
        np.testing.assert_array_equal(axes[1].get_lines()[0].get_ydata(), graded.weight_grad_ratio)
        assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "log"
        heights = [patch.get_height() for patch in axes[3].patches]
        assert heights == graded.grad_hist[1].tolist()
        assert axes[2].get_xlim() == graded.grad_range
        figure = plot.histograms(graded, gradients=True, layers=[-1])
        (ax,) = [ax for ax in figure.get_axes() if ax.get_visible()]
        assert [p.get_height() for p in ax.patches] == graded.grad_hist[2].tolist()
        figure = plot.compare([graded, graded], ["a", "b"], value="grad_std")
        np.testing.assert_array_equal(figure.get_axes()[0].get_lines()[0].get_ydata(),
                                      graded.grad_std)  # fmt: skip
        plain = initscope.propagate([4], n_samples=5, backend="numpy")
        with pytest.raises(ValueError, match="gradients=True"):
            plain.plot(gradients=True)
        with pytest.raises(ValueError, match="gradients=True"):
            plot.compare([plain], value="grad_std")
        with pytest.raises(TypeError, match="gradients must be True or False"):
            graded.plot(gradients="yes")
    finally:
        plt.close("all")


# ---- sweeps --------------------------------------------------------------------------------


def test_sweeps_with_gradients(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    fixed = {"width": 12, "depth": 3, "n_samples": 40, "grad_bins": 8}
    df = initscope.sweep({"sigma_w": [0.5, 1.5], "gradients": [False, True]}, fixed=fixed,
                         progress=False)  # fmt: skip
    for name in initscope.PropagationResult.GRAD_FIELDS:
        assert df[name].dtype == np.float64, name
        assert df.loc[~df["gradients"], name].isna().all(), name
    with_grads = df[df["gradients"]]
    assert with_grads["grad_std"].notna().all()
    for (sigma_w, seed), rows in with_grads.groupby(["sigma_w", "seed"]):
        result = initscope.propagate(
            [12] * 3, n_samples=40, gradients=True, grad_bins=8, seed=int(seed),
            init=variance_scaling(sigma_w**2, "fan_in", "untruncated_normal"),
        )  # fmt: skip
        for name in initscope.PropagationResult.GRAD_FIELDS:
            np.testing.assert_array_equal(rows[name].to_numpy(), getattr(result, name), name)
        cid = rows["config_id"].iloc[0]
        hist = df.grad_histograms[df.grad_histograms["config_id"] == cid]
        assert len(hist) == 3 * 8
        np.testing.assert_array_equal(hist["count"].to_numpy().reshape(3, 8), result.grad_hist)
        np.testing.assert_array_equal(hist["low"].to_numpy()[:8], result.grad_bin_edges[:-1])
    assert set(df.grad_histograms["config_id"]) == set(with_grads["config_id"])
    written = initscope.sweep({"sigma_w": [0.5, 1.5], "gradients": [False, True]}, fixed=fixed,
                              progress=False, out=tmp_path / "s")  # fmt: skip
    pd.testing.assert_frame_equal(written, df)
    pd.testing.assert_frame_equal(written.grad_histograms, df.grad_histograms)
    loaded = initscope.load_sweep(tmp_path / "s")
    pd.testing.assert_frame_equal(loaded.grad_histograms, df.grad_histograms)
    plain = initscope.sweep({"width": [8]}, fixed={"depth": 2, "n_samples": 20}, progress=False)
    assert "grad_std" not in plain and "chi1" in plain and len(plain.grad_histograms) == 0


def test_sweep_hashes_and_refusals():
    grid_module = pytest.importorskip("initscope.sweep.grid")

    def config_id(**fixed):
        configs, _ = grid_module.expand({"width": [8]}, {"depth": 2, **fixed}, repeats=1,
                                        seed=0, max_configs=None)  # fmt: skip
        return configs[0].config_id

    base = config_id()
    assert config_id(gradients=False) == base
    assert config_id(gradients=False, grad_bins=7) == base  # changes no number
    grads = config_id(gradients=True)
    assert grads != base
    assert config_id(gradients=True, grad_bins=30) == grads  # the default: bins
    assert config_id(gradients=True, grad_bins=31) != grads
    assert config_id(gradients=True, grad_range=(-1, 1)) != grads
    with pytest.raises(ValueError, match="output_grad"):
        initscope.sweep({"width": [8]}, fixed={"depth": 2, "output_grad": np.zeros((2, 8))})
    with pytest.raises(TypeError, match=r"fixed\['gradients'\] must be True or False"):
        initscope.sweep({"width": [8]}, fixed={"depth": 2, "gradients": "yes"})
    with pytest.raises(ValueError, match=r"grid\['grad_range'\]\[0\] must have low < high"):
        initscope.sweep({"width": [8], "grad_range": [(1, 0)]}, fixed={"depth": 2})
