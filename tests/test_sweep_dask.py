"""Sweeps on a real Dask cluster of two worker processes equal the local run."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import initscope

pd = pytest.importorskip("pandas")
distributed = pytest.importorskip("distributed")

GRID = {"width": [8, 16, 24], "sigma_w": [0.7, 1.0, 1.3, 1.6]}
FIXED = {"depth": 3, "n_samples": 80}


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def test_local_cluster_equals_local_run(client, tmp_path):
    local = initscope.sweep(GRID, fixed=FIXED, repeats=2)
    remote = initscope.sweep(GRID, fixed=FIXED, repeats=2, executor=client.get_executor())
    pd.testing.assert_frame_equal(remote, local)
    pd.testing.assert_frame_equal(remote.histograms, local.histograms)
    written = initscope.sweep(
        GRID, fixed=FIXED, repeats=2, executor=client.get_executor(), out=tmp_path / "out"
    )
    pd.testing.assert_frame_equal(written, local)
    assert len(client.nthreads()) == 2


def test_failures_on_workers_are_reported_with_their_parameters(client, tmp_path):
    broken = functools.partial(np.zeros, (3, 3))  # called as f(fan_in, fan_out): TypeError
    with pytest.raises(initscope.SweepError, match="1 of 2 configurations failed") as info:
        initscope.sweep(
            {"init": ["xavier", broken]},
            fixed=FIXED | {"width": 8},
            executor=client.get_executor(),
            out=tmp_path / "out",
        )
    ((params, error),) = info.value.failures
    assert "zeros" in str(params["init"]) and "TypeError" in error
    done = initscope.load_sweep(tmp_path / "out")
    assert list(done["init"].unique()) == ["xavier"]
    np.testing.assert_array_equal(
        done["std"], initscope.propagate([8] * 3, n_samples=80, seed=int(done["seed"][0])).std
    )
