"""Sweeps: rows equal separate propagate calls, output written as it goes, resumable."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import initscope
from initscope.schemes import variance_scaling

pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

sweep_api = importlib.import_module("initscope.sweep.api")
runner = importlib.import_module("initscope.sweep.runner")
work = importlib.import_module("initscope.sweep.work")
grid_module = importlib.import_module("initscope.sweep.grid")

SMALL = {"n_samples": 50, "depth": 3}
STATS = initscope.PropagationResult.LAYER_FIELDS


def _check_rows(frame, widths, seed, **kwargs):
    """The rows of one (configuration, repeat) equal a propagate call, exactly."""
    result = initscope.propagate(widths, seed=seed, **kwargs)
    assert list(frame["layer"]) == list(range(1, len(widths) + 1))
    assert list(frame["width"]) == list(widths)
    for name in STATS:
        np.testing.assert_array_equal(frame[name].to_numpy(), getattr(result, name), err_msg=name)
    return result


def test_rows_equal_propagate_calls():
    df = initscope.sweep(
        {"init": ["xavier", "he_normal"], "width": [8, 24], "activation": ["tanh", "relu"]},
        fixed={"depth": 3, "n_samples": 60, "bias": 0.1},
        repeats=2,
        seed=7,
    )
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 2 * 2 * 2 * 2 * 3
    assert df["config_id"].nunique() == 8
    seen = 0
    for (cid, repeat), rows in df.groupby(["config_id", "repeat"], sort=False):
        first = rows.iloc[0]
        assert first["seed"] == grid_module.repeat_seed(7, cid, repeat)
        result = _check_rows(
            rows,
            [int(first["width"])] * 3,
            int(first["seed"]),
            init=first["init"],
            activation=first["activation"],
            n_samples=60,
            bias=0.1,
        )
        hist = df.histograms[
            (df.histograms["config_id"] == cid) & (df.histograms["repeat"] == repeat)
        ]
        np.testing.assert_array_equal(hist["count"].to_numpy().reshape(3, 30), result.hist)
        np.testing.assert_array_equal(hist["low"].to_numpy()[:30], result.bin_edges[:-1])
        np.testing.assert_array_equal(hist["high"].to_numpy()[:30], result.bin_edges[1:])
        seen += 1
    assert seen == 16
    # the same sweep gives the same numbers, and another seed other numbers
    pd.testing.assert_frame_equal(
        df,
        initscope.sweep(
            {"init": ["xavier", "he_normal"], "width": [8, 24], "activation": ["tanh", "relu"]},
            fixed={"depth": 3, "n_samples": 60, "bias": 0.1},
            repeats=2,
            seed=7,
            workers=1,
        ),
    )
    other = initscope.sweep({"width": [8]}, fixed={"depth": 3, "n_samples": 60}, seed=8)
    assert not np.array_equal(other["std"], df["std"][:3])


def test_sigma_w_and_sigma_b_mean_field_parameterisation():
    df = initscope.sweep(
        {"sigma_w": [0.5, 2.0], "sigma_b": [0.0, 0.3]}, fixed={"width": 16, **SMALL}
    )
    for (sw, sb), rows in df.groupby(["sigma_w", "sigma_b"]):
        init = variance_scaling(sw**2, "fan_in", "untruncated_normal")
        _check_rows(rows, [16] * 3, int(rows["seed"].iloc[0]), init=init, bias=sb, n_samples=50)
    # a uniform scheme keeps its shape, with the variance sigma_w**2 / fan_in
    uni = initscope.sweep({"sigma_w": [1.5]}, fixed={"width": 16, "init": "he_uniform", **SMALL})
    init = variance_scaling(2.25, "fan_in", "uniform")
    _check_rows(uni, [16] * 3, int(uni["seed"].iloc[0]), init=init, n_samples=50)
    weights = initscope.make_weights(init, 4000, 50)
    assert weights.var() == pytest.approx(2.25 / 4000, rel=0.02)
    assert np.abs(weights).max() <= np.sqrt(3 * 2.25 / 4000)


def test_explicit_seeds_widths_and_same_network_spelled_twice():
    df = initscope.sweep({"seed": [0, 5]}, fixed={"widths": [10, 20, 5], "n_samples": 40})
    assert list(df["seed"].unique()) == [0, 5]
    for s, rows in df.groupby("seed"):
        _check_rows(rows, [10, 20, 5], int(s), n_samples=40)
    a = initscope.sweep({"width": [12]}, fixed={"depth": 2, "n_samples": 30})
    b = initscope.sweep({"widths": [[12, 12]]}, fixed={"n_samples": 30})
    assert a["config_id"].iloc[0] == b["config_id"].iloc[0]
    np.testing.assert_array_equal(a["std"], b["std"])


def test_config_ids_are_stable_and_cover_what_changes_numbers():
    configs, _ = grid_module.expand(
        {"width": [8, 9]}, {"depth": 2}, repeats=1, seed=0, max_configs=None
    )
    # a change of the hash is a change of the result format: bump FORMAT_VERSION with it
    ids = [c.config_id for c in configs]
    assert ids == ["56673ad3c287fa02", "0f3e1e4c4431f054"]

    def first_id(**fixed):
        found, _ = grid_module.expand(
            {"width": [8]}, {"depth": 2, **fixed}, repeats=1, seed=0, max_configs=None
        )
        return found[0].config_id

    # defaults spelled out, and what changes no number, leave the id alone
    assert first_id(init="xavier", n_samples=1000, chunk_size=240) == ids[0]
    for changed in ({"n_samples": 999}, {"init": "he_normal"}, {"bins": 31}, {"bias": 0.1}):
        assert first_id(**changed) != ids[0], changed
    # in a grid over seeds, each configuration is what it would be alone
    seeded, _ = grid_module.expand(
        {"seed": [3, 7, 11], "width": [8, 9]}, {"depth": 2}, repeats=1, seed=0, max_configs=None
    )
    assert len({c.config_id for c in seeded}) == 6
    for config in seeded:
        (alone,), _ = grid_module.expand(
            {"seed": [config.columns["seed"]]},
            {"depth": 2, "width": config.columns["width"]},
            repeats=1,
            seed=0,
            max_configs=None,
        )
        assert (alone.config_id, alone.seeds) == (config.config_id, config.seeds)
        assert alone.kwargs == config.kwargs


def test_one_and_two_workers_give_identical_tables():
    grid = {"width": [8, 16, 32, 48], "sigma_w": [0.8, 1.2, 1.6]}
    one = initscope.sweep(grid, fixed=SMALL, repeats=2, workers=1)
    two = initscope.sweep(grid, fixed=SMALL, repeats=2, workers=2)
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(one.histograms, two.histograms)


@pytest.mark.parametrize(
    ("grid", "fixed", "error", "match"),
    [
        ({"widht": [8]}, {}, ValueError, r"grid\['widht'\].*valid ones are widths"),
        ({"width": []}, {"depth": 2}, ValueError, r"grid\['width'\] is an empty list"),
        ({"width": 8}, {"depth": 2}, TypeError, r"grid\['width'\] must be a list"),
        ({"width": ["8"]}, {"depth": 2}, TypeError, r"grid\['width'\]\[0\] must be an integer"),
        ({"width": [8]}, {"depth": 2.5}, TypeError, r"fixed\['depth'\] must be an integer"),
        ({"width": [8]}, {"widths": [8, 8]}, ValueError, r"contradict"),
        ({"depth": [2]}, {"widths": [8, 8]}, ValueError, r"contradict"),
        ({"sigma_b": [0.1]}, {"widths": [8], "bias": 0.2}, ValueError, r"contradict"),
        ({"width": [8]}, {}, ValueError, r"needs 'depth'"),
        ({"init": ["xavier"]}, {}, ValueError, r"widths"),
        ({"width": [8]}, {"depth": 2, "threads": 2}, ValueError, r"fixed\['threads'\]"),
        ({"width": [8]}, {"depth": 2, "init": "nope"}, ValueError, r"init 'nope' is unknown"),
        ({"sigma_w": [1.0]}, {"widths": [8], "init": "orthogonal"}, ValueError, r"sigma_w"),
        ({"sigma_w": [0.0]}, {"widths": [8]}, ValueError, r"grid\['sigma_w'\]\[0\]"),
        ({"width": [8]}, {"depth": 2, "seed": -1}, ValueError, r"fixed\['seed'\]"),
        ({"width": [8]}, {"depth": 2, "dtype": "int8"}, ValueError, r"fixed\['dtype'\]"),
        ({"width": [8]}, {"depth": 2, "bias": [0.1]}, ValueError, r"bias has 1 entries"),
        ({"width": [8]}, {"depth": 2}, None, None),
    ],
)
def test_bad_grids_raise_before_any_run(monkeypatch, grid, fixed, error, match):
    calls = []
    monkeypatch.setattr(work, "run_seeds", lambda *a: calls.append(a))
    if error is None:
        monkeypatch.setattr(runner, "run_local", lambda *a: calls.append(a))
        initscope.sweep(grid, fixed=fixed)
        return
    with pytest.raises(error, match=match):
        initscope.sweep(grid, fixed=fixed)
    assert not calls


def test_bad_arguments(tmp_path):
    ok = {"width": [8]}
    with pytest.raises(TypeError, match="grid must be a mapping"):
        initscope.sweep([("width", [8])])
    with pytest.raises(TypeError, match="executor must be a concurrent.futures.Executor"):
        initscope.sweep(ok, fixed={"depth": 2}, executor=object())
    with pytest.raises(ValueError, match="repeats must be positive"):
        initscope.sweep(ok, fixed={"depth": 2}, repeats=0)
    with pytest.raises(ValueError, match="repeats must be 1"):
        initscope.sweep(ok, fixed={"depth": 2, "seed": 3}, repeats=2)
    with pytest.raises(TypeError, match="workers must be an integer"):
        initscope.sweep(ok, fixed={"depth": 2}, workers=1.5)
    with pytest.raises(TypeError, match="progress must be"):
        initscope.sweep(ok, fixed={"depth": 2}, progress="yes")
    with pytest.raises(ValueError, match="1,001 configurations, more than max_configs = 1,000"):
        initscope.sweep(
            {"width": list(range(1, 12)), "depth": list(range(1, 92))}, max_configs=1000
        )
    with pytest.raises(ValueError, match=r"grid has 1,999,998 configurations.*max_configs"):
        initscope.sweep(
            {"width": list(range(1, 1002)), "depth": list(range(1, 1000)), "bins": [1, 2]}
        )
    with pytest.raises(
        ValueError, match=r"(?s)need more than max_memory.*width=4096, depth=2: about"
    ):
        initscope.sweep({"width": [8, 4096]}, fixed={"depth": 2}, max_memory=2**20)
    with pytest.raises(TypeError, match="out must be a directory path"):
        initscope.sweep(ok, fixed={"depth": 2}, out=3)
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no sweep"):
        initscope.sweep(ok, fixed={"depth": 2}, out=tmp_path / "stranger")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        initscope.sweep(ok, fixed={"depth": 2}, out=tmp_path / "file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="not writable"):
            initscope.sweep(ok, fixed={"depth": 2}, out=locked / "out")


def test_memory_error_shows_sizes_in_a_readable_unit():
    with pytest.raises(
        ValueError,
        match=r"1 configuration\(s\) need more than max_memory = 1000 bytes even when run "
        r"alone:\n  width=8, depth=2: about \d+\.\d KiB\n",
    ):
        initscope.sweep({"width": [8]}, fixed={"depth": 2}, max_memory=1000)
    sizes = [0, 1023, 1024, 1536, 2**20 - 1, 3 * 2**20 + 2**19, 10 * 2**20, 2**30]
    assert [runner._size(n) for n in sizes] == [
        "0 bytes", "1023 bytes", "1.0 KiB", "1.5 KiB", "1.0 MiB", "3.5 MiB", "10 MiB",
        "1,024 MiB",
    ]  # fmt: skip


def test_memory_budget_counts_configurations_in_flight(monkeypatch):
    active, peak = [0], [0]
    lock = threading.Lock()
    real = work.run_seeds

    def counting(*args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        try:
            return real(*args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(work, "run_seeds", counting)
    configs, _ = grid_module.expand(
        {"width": [64]}, {"depth": 2, "n_samples": 500}, repeats=1, seed=0, max_configs=None
    )
    one = runner.prepare(configs, 2, 2**40, local=True)[0].memory
    grid = {"sigma_w": [0.5, 1.0, 1.5, 2.0]}
    fixed = {"width": 64, "depth": 2, "n_samples": 500}
    initscope.sweep(grid, fixed=fixed, workers=2, max_memory=int(one * 1.5))
    assert peak[0] == 1
    peak[0] = 0
    initscope.sweep(grid, fixed=fixed, workers=2, max_memory=one * 2)
    assert peak[0] == 2


def test_large_configurations_run_alone_with_every_thread(monkeypatch):
    seen = []
    real = work.run_seeds
    monkeypatch.setattr(runner, "LARGE_WORK", 40 * 16 * 16 * 2)
    spy = lambda b, p, s: seen.append(p.threads) or real(b, p, s)  # noqa: E731
    monkeypatch.setattr(work, "run_seeds", spy)
    df = initscope.sweep({"width": [4, 16]}, fixed={"depth": 2, "n_samples": 40}, workers=2)
    assert sorted(seen) == [1, 2]
    _check_rows(df[df["width"] == 16], [16, 16], int(df["seed"].iloc[-1]), n_samples=40)


def _raising_init(fan_in, fan_out):
    if fan_out == 13:
        raise RuntimeError("no thirteen")
    return np.full((fan_in, fan_out), 0.1)


def test_failing_configuration_is_reported_and_the_others_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(initscope.SweepError, match=r"1 of 3 configurations failed") as info:
        initscope.sweep(
            {"width": [8, 13, 21]},
            fixed={"depth": 2, "n_samples": 30, "init": _raising_init},
            out=out,
        )
    assert "width=13" in str(info.value) and "no thirteen" in str(info.value)
    assert info.value.failures[0][0]["width"] == 13
    written = initscope.load_sweep(out)
    assert sorted(written["width"].unique()) == [8, 21]


def test_a_failing_seed_among_runs_of_one_call_fails_alone(monkeypatch):
    """A grid over seeds runs a batch's seeds in one kernel call; if it raises, the
    configurations run one by one, so that only the failing one is reported."""
    from initscope.backends import cpp

    real = cpp.run_seeds
    calls = []

    def run_seeds(plan, seeds):
        calls.append(list(seeds))
        if 13 in seeds:
            raise RuntimeError("no thirteen")
        return real(plan, seeds)

    monkeypatch.setattr(cpp, "run_seeds", run_seeds)
    fixed = {"widths": [6, 5], "n_samples": 20, "backend": "cpp"}
    with pytest.raises(initscope.SweepError, match=r"1 of 4 configurations failed") as info:
        initscope.sweep({"seed": [11, 12, 13, 14]}, fixed=fixed, workers=1)
    assert [params["seed"] for params, _ in info.value.failures] == [13]
    # two batches for one thread (runner.batches): 11 and 12 together, 13 and 14 together,
    # then 13 and 14 one by one
    assert calls == [[11, 12], [13, 14], [13], [14]]
    monkeypatch.setattr(cpp, "run_seeds", real)
    df = initscope.sweep({"seed": [11, 12, 14]}, fixed=fixed, workers=1)
    for s, rows in df.groupby("seed"):
        _check_rows(rows, [6, 5], int(s), n_samples=20)


def test_out_written_resumed_and_loaded(tmp_path):
    out = tmp_path / "res"
    grid = {"width": [8, 16], "sigma_w": [1.0, 1.5]}
    plain = initscope.sweep(grid, fixed=SMALL, repeats=2)
    first = initscope.sweep({"width": [8]}, fixed=SMALL, out=tmp_path / "other")
    written = initscope.sweep(grid, fixed=SMALL, repeats=2, out=out)
    pd.testing.assert_frame_equal(written, plain)
    pd.testing.assert_frame_equal(written.histograms, plain.histograms)
    loaded = initscope.load_sweep(out)
    pd.testing.assert_frame_equal(loaded, plain)
    assert not list(out.rglob("*.tmp"))
    # a rerun computes nothing
    calls = []
    real = work.run_seeds
    work.run_seeds = lambda *a: calls.append(a) or real(*a)
    try:
        again = initscope.sweep(grid, fixed=SMALL, repeats=2, out=out)
    finally:
        work.run_seeds = real
    assert calls == []
    pd.testing.assert_frame_equal(again, plain)
    # another sweep's directory is refused, unless resume=False
    with pytest.raises(ValueError, match="holds the results of another sweep"):
        initscope.sweep(grid, fixed=SMALL, repeats=3, out=tmp_path / "other")
    assert len(initscope.load_sweep(tmp_path / "other")) == len(first)
    replaced = initscope.sweep(grid, fixed=SMALL, repeats=3, out=tmp_path / "other", resume=False)
    assert set(replaced["repeat"]) == {0, 1, 2}
    assert len(initscope.load_sweep(tmp_path / "other")) == len(replaced)


def test_per_layer_lists_among_scalars_make_a_text_column(tmp_path):
    # bias 0.0 for every layer, or one std per layer: one column of text, written and read back
    grid = {"bias": [0.0, [0.1, 0.2]]}
    frame = initscope.sweep(grid, fixed={**SMALL, "depth": 2, "width": 8}, out=tmp_path / "res")
    assert list(frame["bias"].unique()) == ["0.0", "[0.1, 0.2]"]
    loaded = initscope.load_sweep(tmp_path / "res")
    assert sorted(loaded["bias"].unique()) == ["0.0", "[0.1, 0.2]"]
    one = frame[frame["bias"] == "[0.1, 0.2]"]
    _check_rows(one, [8, 8], one["seed"].iloc[0], bias=[0.1, 0.2], n_samples=SMALL["n_samples"])


def test_csv_output(tmp_path):
    grid = {"width": [8, 16]}
    plain = initscope.sweep(grid, fixed=SMALL)
    written = initscope.sweep(grid, fixed=SMALL, out=tmp_path / "res.csv")
    assert list((tmp_path / "res.csv" / "frame").glob("*.csv"))
    pd.testing.assert_frame_equal(written, plain, check_dtype=False)
    np.testing.assert_array_equal(written["std"], plain["std"])


def test_load_sweep_bad_path(tmp_path):
    with pytest.raises(ValueError, match="holds no sweep"):
        initscope.load_sweep(tmp_path)
    with pytest.raises(TypeError, match="path must be"):
        initscope.load_sweep(None)


def test_import_stays_light():
    code = (
        "import initscope, sys; "
        "assert not {'pandas', 'pyarrow', 'dask', 'distributed', 'tqdm', 'numba'} "
        "& set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- killed mid-run ------------------------------------------------------------------------

KILL_GRID = {"width": [24, 32, 40, 48, 56, 64], "sigma_w": [0.6, 0.9, 1.2, 1.5, 1.8]}
KILL_FIXED = {"depth": 4, "n_samples": 300}

CHILD = textwrap.dedent(
    """
    import importlib, signal, sys, time
    # a shell that starts jobs in the background leaves SIGINT ignored: take it back
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import initscope
    api = importlib.import_module("initscope.sweep.api")
    work = importlib.import_module("initscope.sweep.work")
    api.FLUSH_SECONDS = 0.0
    real = work.run_seeds
    def slow(*args):
        time.sleep(0.05)
        return real(*args)
    work.run_seeds = slow
    try:
        initscope.sweep({grid!r}, fixed={fixed!r}, repeats=2, workers=1, out=sys.argv[1])
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_sweep_resumes_to_the_same_tables(tmp_path, sig):
    out = tmp_path / "out"
    script = CHILD.format(grid=KILL_GRID, fixed=KILL_FIXED)
    child = subprocess.Popen([sys.executable, "-c", script, str(out)])
    frames = out / "frame"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(frames.glob("part-*"))) < 3:
        time.sleep(0.02)
    child.send_signal(sig)
    sent = time.monotonic()
    code = child.wait(timeout=30)
    if sig == signal.SIGINT:
        assert code == 130
        assert time.monotonic() - sent < 1.5
    else:
        assert code == -signal.SIGKILL
    partial = initscope.load_sweep(out)
    n_done = partial["config_id"].nunique()
    assert 3 <= n_done < 30
    resumed = initscope.sweep(KILL_GRID, fixed=KILL_FIXED, repeats=2, out=out)
    plain = initscope.sweep(KILL_GRID, fixed=KILL_FIXED, repeats=2)
    counts = resumed.groupby("config_id").size()
    assert len(counts) == 30 and set(counts) == {2 * 4}
    assert not resumed.duplicated(["config_id", "repeat", "layer"]).any()
    pd.testing.assert_frame_equal(resumed, plain)
    pd.testing.assert_frame_equal(resumed.histograms, plain.histograms)
    assert not list(Path(out).rglob("*.tmp"))


# ---- progress and command line --------------------------------------------------------------

sweep_cli = importlib.import_module("initscope.sweep.cli")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "phase_diagram.toml"


def _command(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="initscope")
    sweep_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_progress_bar(capsys):
    pytest.importorskip("tqdm")
    initscope.sweep({"width": [8, 16]}, fixed=SMALL, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "config/s" in err


def test_example_file_is_a_valid_sweep():
    spec = sweep_cli.read_toml(EXAMPLE)
    configs, _ = grid_module.expand(
        spec["grid"], spec["fixed"], repeats=spec["repeats"], seed=spec["seed"], max_configs=None
    )
    assert len(configs) == 72
    assert configs[0].kwargs["widths"] == [256] * 30


def test_command_line(tmp_path, capsys):
    spec = tmp_path / "small.toml"
    spec.write_text(
        "repeats = 2\nseed = 3\n[grid]\nsigma_w = [0.5, 1.5]\nwidth = [8, 16]\n"
        '[fixed]\ndepth = 3\nn_samples = 50\nactivation = "relu"\n'
    )
    out = tmp_path / "out"
    assert _command(["sweep", str(spec), "--out", str(out), "--no-progress"]) == 0
    assert "4 configurations, 24 rows" in capsys.readouterr().out
    expected = initscope.sweep(
        {"sigma_w": [0.5, 1.5], "width": [8, 16]},
        fixed={"depth": 3, "n_samples": 50, "activation": "relu"},
        repeats=2,
        seed=3,
    )
    pd.testing.assert_frame_equal(initscope.load_sweep(out), expected)
    bad = tmp_path / "bad.toml"
    bad.write_text("[grid]\nwidth = [8]\n[fixd]\ndepth = 2\n")
    with pytest.raises(ValueError, match="unknown entries fixd"):
        _command(["sweep", str(bad), "--out", str(tmp_path / "o2")])
    bad.write_text("[grid\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        _command(["sweep", str(bad), "--out", str(tmp_path / "o2")])
