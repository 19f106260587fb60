"""Finishing many runs at once: the same numbers as one run at a time, and as NumPy."""

from __future__ import annotations

import importlib
import math
from dataclasses import replace

import numpy as np
import pytest

import initscope
from initscope.backends import get_backend
from initscope.plan import make_plan
from initscope.result import PropagationResult, finish_runs, layer_moments

work = importlib.import_module("initscope.sweep.work")
runner = importlib.import_module("initscope.sweep.runner")
grid_module = importlib.import_module("initscope.sweep.grid")

FIELDS = (*PropagationResult.LAYER_FIELDS, "hist", "weight_var", "bias_std")


def _run(backend="cpp", **kwargs):
    name, module = get_backend(backend)
    plan = make_plan(**kwargs).with_weights()
    return plan, module.run(plan), name


def _scalar_moments(unit_mean, unit_m2, n):
    """Chan et al.'s merge over units, one layer at a time, in Python floats: the formula
    the vectorised finishing must reproduce bit for bit."""
    units = unit_mean.size
    mean = float(unit_mean.sum()) / units
    deviation = unit_mean - mean
    with np.errstate(over="ignore"):
        m2 = float(unit_m2.sum()) + n * float((deviation * deviation).sum())
        sq_mean = float((unit_mean * unit_mean).sum()) / units
    std = math.sqrt(max(m2, 0.0) / (n * units))
    return mean, std, sq_mean, float(unit_m2.sum()) / units / n


def test_layer_moments_equal_the_scalar_formula_and_numpy():
    rng = np.random.default_rng(5)
    widths = [1, 3, 64, 129, 3, 8193]  # rows of several widths, interleaved
    n = np.array([7, 1, 100, 2, 50, 3])
    values = [
        rng.standard_normal((k, w)) * rng.uniform(0.1, 1e3) + 2.0
        for k, w in zip(n, widths, strict=True)
    ]
    unit_mean = [v.mean(axis=0) for v in values]
    unit_m2 = [((v - v.mean(axis=0)) ** 2).sum(axis=0) for v in values]
    finite = np.array([True, True, True, False, True, True])
    out = layer_moments(unit_mean, unit_m2, n, finite)
    assert out.shape == (6, 4)
    assert np.isnan(out[3]).all()
    for row in np.flatnonzero(finite):
        expected = _scalar_moments(unit_mean[row], unit_m2[row], int(n[row]))
        assert tuple(out[row]) == expected  # exactly
        v = values[row]
        np.testing.assert_allclose(out[row, :2], [v.mean(), v.std()], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out[row, 2], np.mean(v.mean(axis=0) ** 2), rtol=1e-12)
        np.testing.assert_allclose(out[row, 3], np.mean(v.var(axis=0)), rtol=1e-12)


def test_finish_runs_of_many_plans_equals_from_raw_one_at_a_time():
    depth = 3
    runs = [
        _run(widths=[16] * depth, n_samples=300, seed=1),
        _run(widths=[8, 40, 5], n_samples=250, seed=2, bias=0.3, activation="relu"),
        _run(widths=[12] * depth, n_samples=100, seed=3, init="orthogonal"),  # built matrices
        _run(widths=[12] * depth, n_samples=100, seed=4, init="orthogonal"),
        # overflowing activations: NaN moments where a layer holds inf
        _run(widths=[6] * depth, n_samples=60, seed=5, init=initscope.schemes.normal(std=1e150),
             activation="linear"),
        _run(widths=[10] * depth, n_samples=90, seed=6, dtype="float32", activation="sigmoid"),
        _run("numpy", widths=[7] * depth, n_samples=40, seed=7),
    ]  # fmt: skip
    plans, raws = [r[0] for r in runs], [r[1] for r in runs]
    fields = finish_runs(plans, raws, "cpp")
    assert np.isnan(fields["std"][4]).any()
    for r, (plan, raw, name) in enumerate(runs):
        single = PropagationResult.from_raw(plan, raw, name)
        for field in FIELDS:
            np.testing.assert_array_equal(fields[field][r], getattr(single, field), field)
        np.testing.assert_array_equal(fields["bin_edges"][r], single.bin_edges)
        for layer in range(depth):  # the per-layer formula, independently
            if raw.nonfinite[layer] == 0:
                mean, std, *_ = _scalar_moments(
                    raw.unit_mean[layer], raw.unit_m2[layer], plan.n_samples
                )
                assert (single.mean[layer], single.std[layer]) == (mean, std)
    with pytest.raises(ValueError, match="share depth and bins"):
        finish_runs([plans[0], replace(plans[1], bins=7)], raws[:2], "cpp")


def test_a_huge_weight_std_gives_an_infinite_weight_var():
    result = initscope.propagate(
        [4, 4], n_samples=10, init=initscope.schemes.normal(std=1e160), activation="linear"
    )
    assert np.isinf(result.weight_var).all()
    uniform = initscope.propagate([4], n_samples=10, init=initscope.schemes.uniform(-1e160, 1e160))
    assert np.isinf(uniform.weight_var).all()
    # and the ordinary ones are the formulas': std**2, (b - a)**2 / 12, times fan_in
    assert (
        initscope.propagate(
            [3], input_dim=5, init=initscope.schemes.normal(std=0.1), n_samples=10
        ).weight_var[0]
        == 5 * 0.1**2
    )
    assert (
        initscope.propagate(
            [3], input_dim=5, init=initscope.schemes.uniform(-0.3, 0.5), n_samples=10
        ).weight_var[0]
        == 5 * (0.5 + 0.3) ** 2 / 12
    )


def test_finish_runs_with_gradients_equals_from_raw():
    runs = [
        _run(widths=[20, 30, 20], n_samples=250, seed=s, gradients=True, grad_bins=9)
        for s in range(3)
    ] + [_run(widths=[5, 5, 5], n_samples=50, seed=9, gradients=True, grad_bins=9,
              grad_range=(-0.5, 0.5))]  # fmt: skip
    fields = finish_runs([r[0] for r in runs], [r[1] for r in runs], "cpp")
    for r, (plan, raw, name) in enumerate(runs):
        single = PropagationResult.from_raw(plan, raw, name)
        for field in (*PropagationResult.GRAD_FIELDS, "grad_hist", "grad_bin_edges"):
            np.testing.assert_array_equal(fields[field][r], getattr(single, field), field)
        assert fields["grad_range"][r] == single.grad_range
    assert fields["grad_range"][3] == (-0.5, 0.5)


def test_a_batch_finished_together_equals_its_runs_one_by_one():
    configs, _ = grid_module.expand(
        {"width": [8, 16], "seed": [1, 2, 3], "init": ["xavier", "orthogonal"]},
        {"depth": 3, "n_samples": 50},
        repeats=1,
        seed=0,
        max_configs=None,
    )
    jobs = runner.prepare(configs, 2, 2**40, local=True)
    # the same run with other seeds shares one plan, planned once
    by_run: dict = {}
    for job in jobs:
        key = (job.config.columns["width"], job.config.columns["init"])
        by_run.setdefault(key, set()).add(id(job.plan))
    assert len(by_run) == 4 and all(len(plans) == 1 for plans in by_run.values())
    together = work.run_batch([j.task for j in jobs])
    for job, outcome in zip(jobs, together, strict=True):
        alone = work.run_config(*job.task)
        assert outcome.index == alone.index == job.config.index
        for field in ("widths", "floats", "ints", "hist", "bin_edges"):
            np.testing.assert_array_equal(getattr(outcome, field), getattr(alone, field))
        width, seed = job.config.columns["width"], job.config.columns["seed"]
        result = initscope.propagate(
            [width] * 3, n_samples=50, seed=seed, init=job.config.columns["init"]
        )
        np.testing.assert_array_equal(
            outcome.floats[0, :, work.FLOAT_FIELDS.index("std")], result.std
        )


def _raising_init(fan_in, fan_out):
    raise RuntimeError("broken scheme")


def test_a_failing_configuration_leaves_its_batch_alone():
    configs, _ = grid_module.expand(
        {"init": ["xavier", _raising_init, "he_normal"]},
        {"width": 8, "depth": 2, "n_samples": 30},
        repeats=2,
        seed=0,
        max_configs=None,
    )
    jobs = runner.prepare(configs, 1, 2**40, local=True)
    good, bad, other = work.run_batch([j.task for j in jobs])
    assert bad.error is not None and "broken scheme" in bad.error
    assert good.error is None and other.error is None
    np.testing.assert_array_equal(good.floats, work.run_config(*jobs[0].task).floats)
    np.testing.assert_array_equal(other.floats, work.run_config(*jobs[2].task).floats)


def test_finish_sorts_by_grid_position_and_keeps_each_row_once():
    pd = pytest.importorskip("pandas")
    frames = importlib.import_module("initscope.sweep.frames")
    rng = np.random.default_rng(0)
    ids = ["c", "a", "b"]  # grid order, not the ids' order
    rows = [(cid, r, layer) for cid in ids for r in range(2) for layer in (1, 2, 3)]
    frame = pd.DataFrame(rows, columns=["config_id", "repeat", "layer"])
    frame["std"] = rng.standard_normal(len(frame))
    shuffled = pd.concat([frame, frame.iloc[[4, 0]]]).sample(frac=1.0, random_state=1)
    shuffled = pd.concat([shuffled, frame.iloc[[0]].assign(config_id="stranger")])
    shuffled["config_id"] = shuffled["config_id"].astype(str)
    order = {cid: i for i, cid in enumerate(ids)}
    result = frames.finish(shuffled, frames.empty_tables([])[1], order)
    # the same as pandas' own: drop repeated rows, sort by (grid position, repeat, layer)
    expected = shuffled.drop_duplicates(["config_id", "repeat", "layer"])
    expected = expected.assign(_p=expected["config_id"].map(order).fillna(len(ids)))
    expected = expected.sort_values(["_p", "repeat", "layer"], kind="stable").drop(columns="_p")
    pd.testing.assert_frame_equal(
        pd.DataFrame(result), expected.reset_index(drop=True), check_dtype=False
    )
    assert list(result["config_id"][:6]) == ["c"] * 6 and result["config_id"].iloc[-1] == "stranger"
