"""Every malformed argument gets a ValueError or TypeError naming it, before any heavy work.

The runs below ask for 10**9 samples of width 10**4: were any work done before the
check, they would take hours, so each test also shows the check comes first.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import initscope

HUGE = {"n_samples": 10**9}


def bad_shape(fan_in, fan_out):
    return np.zeros((fan_out, fan_in + 1))


def bad_dtype(fan_in, fan_out):
    return np.zeros((fan_in, fan_out), dtype=complex)


def not_an_array(fan_in, fan_out):
    return [[0.0] * fan_out] * fan_in


def with_nan(fan_in, fan_out):
    w = np.zeros((fan_in, fan_out))
    w[0, 0] = np.nan
    return w


CASES = [
    # (kwargs, exception, message fragment)
    ({"widths": []}, ValueError, "widths"),
    ({"widths": [500, 0]}, ValueError, r"widths\[1\]"),
    ({"widths": [-5]}, ValueError, r"widths\[0\]"),
    ({"widths": [2.5]}, TypeError, r"widths\[0\]"),
    ({"widths": [True]}, TypeError, r"widths\[0\]"),
    ({"widths": "500"}, TypeError, "widths"),
    ({"widths": 500}, TypeError, "widths"),
    ({"n_samples": 0}, ValueError, "n_samples"),
    ({"n_samples": -10}, ValueError, "n_samples"),
    ({"n_samples": 10.0}, TypeError, "n_samples"),
    ({"init": "glorot"}, ValueError, "init 'glorot' is unknown; choose one of .*xavier"),
    ({"init": 3}, TypeError, "init"),
    ({"init": ["xavier"] * 3}, ValueError, "init has 3 entries for 2 layers"),
    ({"activation": "swish"}, ValueError, "activation 'swish' is unknown; choose one of .*tanh"),
    ({"activation": ("tanh", 0.1)}, ValueError, "takes no parameter"),
    ({"activation": ["tanh"]}, ValueError, "activation has 1 entries for 2 layers"),
    ({"backend": "gpu"}, ValueError, "backend 'gpu' is unknown; choose one of auto"),
    ({"dtype": "float16"}, ValueError, "dtype must be 'float32' or 'float64'"),
    ({"dtype": "int64"}, ValueError, "dtype"),
    ({"bins": 0}, ValueError, "bins"),
    ({"bins": -1}, ValueError, "bins"),
    ({"bins": 2**31 - 3}, ValueError, r"bins must be at most 2\*\*31 - 4"),
    ({"hist_range": (1.0, 1.0)}, ValueError, "hist_range must have low < high"),
    ({"hist_range": (2.0, -1.0)}, ValueError, "hist_range"),
    ({"hist_range": (0.0, np.nan)}, ValueError, r"hist_range\[1\]"),
    ({"hist_range": 1.0}, TypeError, "hist_range"),
    ({"bias": -0.1}, ValueError, "bias"),
    ({"bias": np.inf}, ValueError, "bias"),
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 2**64}, ValueError, "seed"),
    ({"seed": 1.5}, TypeError, "seed"),
    ({"threads": 0}, ValueError, "threads"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"input_dim": 0}, ValueError, "input_dim"),
    ({"keep_activations": "yes"}, TypeError, "keep_activations"),
    ({"max_memory": 2**20}, ValueError, "max_memory.*chunk_size"),
    ({"keep_activations": True}, ValueError, "keep_activations=False"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), CASES)
def test_bad_argument(backend, kwargs, error, match):
    args = {"widths": [10_000, 10_000], **HUGE, "backend": backend, **kwargs}
    with pytest.raises(error, match=match):
        initscope.propagate(args.pop("widths"), **args)


def test_the_kernel_checks_bins_itself():
    """initscope._core is callable without make_plan's checks: its own keeps the histogram's
    int slots (bins + 3) from overflowing."""
    from initscope.backends import cpp
    from initscope.plan import make_plan

    try:
        core = cpp._load()
    except ImportError as exc:
        pytest.skip(f"initscope._core unavailable: {exc}")
    plan = make_plan([3], n_samples=4)
    args = {
        "n_samples": 4, "input_dim": 3, "seeds": [0], "dtype": "float64", "inputs": None,
        "layers": cpp._layer_specs(plan), "hist_low": -1.0, "hist_high": 1.0,
        "threads": 1, "chunk_size": 4, "keep_activations": False,
    }  # fmt: skip
    assert core.propagate(bins=30, **args)[0].hist.shape == (1, 30)
    with pytest.raises(ValueError, match=r"bins must be in \[1, 2\*\*31 - 3\)"):
        core.propagate(bins=2**31 - 3, **args)


INIT_CASES = [
    (bad_shape, ValueError, r"returned shape \(3, 5\) for layer 0, expected"),
    (bad_dtype, TypeError, "dtype complex128"),
    (not_an_array, TypeError, "must return a numpy array"),
    (with_nan, ValueError, "NaN or inf"),
]


@pytest.mark.parametrize(("init", "error", "match"), INIT_CASES)
def test_bad_user_init(backend, init, error, match):
    with pytest.raises(error, match=match):
        initscope.propagate([3, 3], input_dim=4, n_samples=10, init=init, backend=backend)


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error", "match"),
    [
        (np.zeros(10), {}, ValueError, "inputs must have shape"),
        (np.zeros((0, 5)), {}, ValueError, "inputs must have shape"),
        (np.zeros((4, 6)), {"input_dim": 5}, ValueError, "inputs has 6 columns but input_dim"),
        (np.zeros((4, 5), dtype=object), {}, TypeError, "inputs must hold real numbers"),
        ([[0.0] * 5] * 4, {}, TypeError, "inputs must be a numpy array"),
    ],
)
def test_bad_inputs(backend, inputs, kwargs, error, match):
    with pytest.raises(error, match=match):
        initscope.propagate([5], inputs=inputs, backend=backend, **kwargs)


def test_user_inputs_set_the_sample_count_and_input_dim(backend):
    x = np.linspace(-1, 1, 7 * 3).reshape(7, 3)
    result = initscope.propagate([4], inputs=x, backend=backend, keep_activations=True)
    assert result.n_samples == 7
    assert result.activations is not None and result.activations[0].shape == (7, 4)


def test_unavailable_backend_names_what_to_install(monkeypatch):
    from initscope import backends

    monkeypatch.setattr(
        backends,
        "_load",
        lambda name: (
            None if name != "numpy" else importlib.import_module("initscope.backends.numpy")
        ),
    )
    with pytest.raises(ImportError, match="pip install 'initscope\\[numba\\]'"):
        initscope.propagate([5], backend="numba")
    with pytest.raises(ImportError, match="initscope._core"):
        initscope.propagate([5], backend="cpp")
    assert initscope.propagate([5], n_samples=3).backend == "numpy"
