"""The classic experiment's three tables, reproduced within sampling error on every backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

import initscope
from initscope.compat import forward_prop

# The published stds of the classic notebook (1000 samples, widths [500] * 10, tanh).
SEED_STDS = {
    "small": [0.213260, 0.047572, 0.010630, 0.002386, 0.000535, 0.000119, 0.000027,
              0.000006, 0.000001, 0.000000],
    "big": [0.982053, 0.981789, 0.981715, 0.981523, 0.981463, 0.981712, 0.981718,
            0.981858, 0.981687, 0.981719],
    "xavier": [0.627422, 0.486087, 0.408522, 0.357302, 0.320092, 0.293146, 0.271269,
               0.256240, 0.242764, 0.230877],
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("init", sorted(SEED_STDS))
def test_reproduces_the_published_tables(backend, init, dtype):
    result = initscope.propagate([500] * 10, init=init, dtype=dtype, backend=backend)
    # different random numbers: sampling error of a few percent, and the 6 printed decimals
    np.testing.assert_allclose(result.std, SEED_STDS[init], rtol=0.04, atol=1.5e-6)
    assert np.all(np.abs(result.mean) < 0.01)
    assert result.backend == backend


def test_big_init_saturates_and_small_init_dies(backend):
    big = initscope.propagate([500] * 10, init="big", backend=backend)
    assert np.all(big.saturated_fraction > 0.9)
    assert np.all(big.hist[:, [0, -1]].sum(axis=1) > 0.9 * 1000 * 500)
    small = initscope.propagate([500] * 10, init="small", backend=backend)
    assert np.all(small.saturated_fraction[1:] == 0)
    assert small.hist[-1, 14] + small.hist[-1, 15] == 1000 * 500  # all mass at the centre


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_relu_variants_run(backend, activation):
    result = initscope.propagate(
        [500] * 10, init="he_normal", activation=activation, backend=backend
    )
    # He init keeps E[a^2] constant through ReLU layers: the second moment stays ~1
    second_moment = result.std**2 + result.mean**2
    np.testing.assert_allclose(second_moment, 1.0, rtol=0.25)
    if activation == "relu":
        np.testing.assert_allclose(result.zero_fraction, 0.5, atol=0.05)
    else:
        assert np.all(result.zero_fraction == 0)


def test_printed_table_has_the_seed_format():
    result = initscope.propagate([500] * 10, init="small", backend="numpy")
    lines = str(result).splitlines()
    assert len(lines) == 10
    assert lines[0] == "Hidden layer 1 had mean %f and std %f" % (result.mean[0], result.std[0])


def test_to_dict_is_json_and_to_frame_is_tidy():
    result = initscope.propagate([20, 30], activation="relu", backend="numpy", n_samples=50)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["widths"] == [20, 30]
    assert data["saturated_fraction"] == [None, None]  # relu is unbounded
    assert len(data["hist"]) == 2 and len(data["hist"][0]) == 30
    pd = pytest.importorskip("pandas")
    frame = result.to_frame()
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["layer"]) == [1, 2]
    np.testing.assert_array_equal(frame["std"], result.std)


def test_statistics_match_the_kept_activations(backend):
    result = initscope.propagate(
        [40, 30, 20],
        n_samples=300,
        bias=0.5,
        keep_activations=True,
        backend=backend,
        bins=10,
        hist_range=(-0.8, 0.8),
    )
    assert result.activations is not None and len(result.activations) == 3
    for i, a in enumerate(result.activations):
        assert a.shape == (300, result.widths[i])
        assert result.mean[i] == pytest.approx(a.mean(), rel=1e-10, abs=1e-14)
        assert result.std[i] == pytest.approx(a.std(), rel=1e-10)
        assert result.min[i] == a.min() and result.max[i] == a.max()
        assert result.channel_var[i] == pytest.approx(a.var(axis=0).mean(), rel=1e-10)
        assert result.channel_sq_mean[i] == pytest.approx((a.mean(axis=0) ** 2).mean(), rel=1e-9)
        counts, _ = np.histogram(a, bins=10, range=(-0.8, 0.8))
        assert np.abs(result.hist[i] - counts).sum() <= 2  # differ only at exact bin edges
        assert result.below[i] == np.sum(a < -0.8) and result.above[i] == np.sum(a > 0.8)


def test_compat_forward_prop_runs_the_seed_code():
    def small_random_init(fan_in, fan_out):
        return 0.01 * np.random.randn(fan_in, fan_out)  # noqa: NPY002 (the seed's own code)

    np.random.seed(0)  # noqa: NPY002
    acts, means, stds = forward_prop([500] * 10, small_random_init)
    assert sorted(acts) == list(range(10))
    assert acts[0].shape == (1000, 500)
    assert means[3] == pytest.approx(np.mean(acts[3]), rel=1e-10, abs=1e-15)
    assert stds[0] == pytest.approx(np.std(acts[0]), rel=1e-10)
    np.testing.assert_allclose(stds, SEED_STDS["small"], rtol=0.04, atol=1.5e-6)


def test_make_weights_is_what_propagate_uses():
    w = initscope.make_weights("xavier", 30, 20, seed=5, layer=0)
    x = np.ones((1, 30))
    result = initscope.propagate(
        [20],
        init="xavier",
        inputs=x,
        seed=5,
        activation="linear",
        keep_activations=True,
        backend="numpy",
    )
    np.testing.assert_array_equal(result.activations[0], x @ w)
    torch_layout = initscope.make_weights("xavier", 30, 20, seed=5, layout="torch")
    np.testing.assert_array_equal(torch_layout, w.T)
