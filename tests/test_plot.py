"""The pictures: rendered to files, checked by structure (axes, data, labels, scales)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import initscope
from initscope.cli import main

matplotlib = pytest.importorskip("matplotlib")
pd = pytest.importorskip("pandas")
matplotlib.use("Agg")  # this process only writes files, whatever the machine's matplotlibrc

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from initscope import plot  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def seed_results():
    """The classic three experiments, on a smaller network."""
    return {
        init: initscope.propagate([100] * 6, init=init, activation="tanh", n_samples=200)
        for init in ("small", "big", "xavier")
    }


def _render(figure, path):
    figure.savefig(path)
    assert path.read_bytes().startswith(PNG)
    return figure


def _bars(ax):
    return np.array([patch.get_height() for patch in ax.patches])


def _visible(figure):
    return [ax for ax in figure.axes if ax.get_visible()]


# --- import and backend ---------------------------------------------------------------------


def _python(code, env=None):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def test_import_initscope_loads_neither_matplotlib_nor_pandas():
    code = (
        "import sys, initscope, initscope.plot;"
        "assert 'matplotlib' not in sys.modules, 'matplotlib';"
        "assert 'pandas' not in sys.modules, 'pandas'"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr


def _headless_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("MPLBACKEND", None)
    env["MPLCONFIGDIR"] = str(tmp_path)  # no user matplotlibrc: no backend chosen
    env.update(extra)
    return env


DRAW = (
    "import initscope, matplotlib;"
    "r = initscope.propagate([20] * 3, n_samples=50);"
    "r.plot().savefig({path!r});"
    "print(matplotlib.get_backend().lower())"
)


def test_headless_without_configuration_draws_on_agg(tmp_path):
    path = tmp_path / "headless.png"
    done = _python(DRAW.format(path=str(path)), env=_headless_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["agg"]
    assert path.read_bytes().startswith(PNG)


def test_a_backend_the_user_chose_is_kept(tmp_path):
    path = tmp_path / "chosen.png"
    done = _python(DRAW.format(path=str(path)), env=_headless_env(tmp_path, MPLBACKEND="svg"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg"]
    assert path.read_bytes().startswith(PNG)


def test_missing_matplotlib_names_the_extra(monkeypatch, seed_results):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"initscope\[plot\]"):
        seed_results["xavier"].plot()
    with pytest.raises(ImportError, match=r"initscope\[plot\]"):
        plot.compare(list(seed_results.values()))


# --- result.plot ----------------------------------------------------------------------------


def test_result_plot_holds_the_classic_figures(tmp_path, seed_results):
    result = seed_results["big"]
    figure = _render(result.plot(), tmp_path / "big.png")
    axes = _visible(figure)
    assert len(axes) == 2 + result.depth
    mean_ax, std_ax, *hist_axes = axes
    assert mean_ax.get_title() == "layer mean" and std_ax.get_title() == "layer std"
    assert mean_ax.get_xlabel() == std_ax.get_xlabel() == "layer"
    (mean_line,) = mean_ax.get_lines()
    (std_line,) = std_ax.get_lines()
    np.testing.assert_array_equal(mean_line.get_xdata(), np.arange(1, result.depth + 1))
    np.testing.assert_array_equal(mean_line.get_ydata(), result.mean)
    np.testing.assert_array_equal(std_line.get_ydata(), result.std)
    assert std_ax.get_yscale() == "linear"
    for layer, ax in enumerate(hist_axes, start=1):
        assert ax.get_title() == f"layer {layer}"
        np.testing.assert_array_equal(_bars(ax), result.hist[layer - 1])
        assert ax.get_xlim() == (-1.0, 1.0)
        assert ax.get_xlabel() == ""  # tanh stays inside (-1, 1): nothing to state
    assert "big init, tanh, 6 layers of 100, 200 samples" in figure.get_suptitle()


def test_log_std(tmp_path, seed_results):
    figure = _render(seed_results["small"].plot(log_std=True), tmp_path / "small.png")
    assert figure.axes[1].get_yscale() == "log"
    assert figure.axes[0].get_yscale() == "linear"


def test_counts_outside_the_range_are_stated(tmp_path):
    result = initscope.propagate([100] * 3, init="big", activation="linear", n_samples=100)
    assert (result.above > 0).all() and (result.below > 0).all()
    figure = _render(result.plot(), tmp_path / "linear.png")
    for i, ax in enumerate(figure.axes[2:]):
        entries = result.n_samples * result.widths[i]
        below, above = 100.0 * result.below[i] / entries, 100.0 * result.above[i] / entries
        assert ax.get_xlabel() == f"< \N{MINUS SIGN}1: {below:.0f} %\n> 1: {above:.0f} %"
        np.testing.assert_array_equal(_bars(ax), result.hist[i])
    with np.errstate(over="ignore"):  # the activations overflow on purpose
        exploding = initscope.propagate(
            [100] * 60, init="big", activation="linear", n_samples=20, dtype="float32"
        )
    assert exploding.nonfinite[-1] > 0
    ax = _visible(exploding.plot(layers=[-1]))[2]
    assert "NaN/inf: 100 %" in ax.get_xlabel()


def test_deep_networks_show_ten_histograms_spread_evenly(tmp_path):
    result = initscope.propagate([20] * 25, n_samples=50)
    figure = _render(result.plot(), tmp_path / "deep.png")
    titles = [ax.get_title() for ax in _visible(figure)[2:]]
    assert len(titles) == plot.MAX_HISTOGRAMS
    assert titles[0] == "layer 1" and titles[-1] == "layer 25"
    numbers = [int(title.split()[1]) for title in titles]
    assert numbers == sorted(set(numbers))


def test_layers_picks_histograms_and_counts_from_the_end(tmp_path, seed_results):
    result = seed_results["xavier"]
    figure = _render(result.plot(layers=[1, -1]), tmp_path / "two.png")
    hist_axes = _visible(figure)[2:]
    assert [ax.get_title() for ax in hist_axes] == ["layer 1", f"layer {result.depth}"]
    np.testing.assert_array_equal(_bars(hist_axes[1]), result.hist[-1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layers": [0]}, ValueError, "layers"),
        ({"layers": [7]}, ValueError, "layers: layer 7 is out of range"),
        ({"layers": [-7]}, ValueError, "layers"),
        ({"layers": []}, ValueError, "layers"),
        ({"layers": "1"}, TypeError, "layers"),
        ({"layers": [1.5]}, TypeError, "layers"),
        ({"log_std": "yes"}, TypeError, "log_std"),
        ({"ax": "figure"}, TypeError, "ax"),
        ({"overlay": [1, 2]}, TypeError, "overlay"),
        ({"overlay": {"theory": {"std": [1.0, 2.0]}}}, ValueError, "overlay.*one value per"),
        ({"overlay": {"theory": {"var": np.ones(6)}}}, ValueError, "overlay.*none of"),
    ],
)
def test_result_plot_bad_input(seed_results, kwargs, error, match):
    with pytest.raises(error, match=match):
        seed_results["xavier"].plot(**kwargs)


def test_overlay_is_one_more_argument(tmp_path, seed_results):
    result = seed_results["xavier"]
    predicted = result.std * 1.1
    other = seed_results["big"]
    figure = result.plot(overlay={"prediction": {"std": predicted}, "big init": other})
    _render(figure, tmp_path / "overlay.png")
    mean_ax, std_ax = figure.axes[:2]
    std_lines = std_ax.get_lines()
    assert len(std_lines) == 3 and len(mean_ax.get_lines()) == 2  # the mapping has no mean
    np.testing.assert_array_equal(std_lines[0].get_ydata(), result.std)
    np.testing.assert_array_equal(std_lines[1].get_ydata(), predicted)
    np.testing.assert_array_equal(std_lines[2].get_ydata(), other.std)
    legend = [text.get_text() for text in std_ax.get_legend().get_texts()]
    assert legend == ["measured", "prediction", "big init"]


def test_result_plot_into_a_subfigure_and_into_axes(tmp_path, seed_results):
    result = seed_results["xavier"]
    figure = plt.figure(figsize=(14, 6), layout="constrained")
    left, right = figure.subfigures(1, 2)
    assert result.plot(ax=left) is figure
    assert plot.histograms(result, ax=right, layers=[2, 3]) is figure
    _render(figure, tmp_path / "sub.png")
    assert len(_visible(figure)) == 2 + result.depth + 2

    figure, axes = plt.subplots(1, 4)
    assert result.plot(ax=axes, layers=[3, 4]) is figure
    np.testing.assert_array_equal(axes[1].get_lines()[0].get_ydata(), result.std)
    np.testing.assert_array_equal(_bars(axes[3]), result.hist[3])
    with pytest.raises(ValueError, match="ax must hold 8 Axes"):
        result.plot(ax=axes)


def test_histograms_alone(tmp_path, seed_results):
    result = seed_results["small"]
    figure = _render(plot.histograms(result), tmp_path / "hist.png")
    axes = _visible(figure)
    assert len(axes) == result.depth
    for i, ax in enumerate(axes):
        np.testing.assert_array_equal(_bars(ax), result.hist[i])
        np.testing.assert_allclose(
            [patch.get_x() for patch in ax.patches], result.bin_edges[:-1], atol=1e-15
        )
    with pytest.raises(TypeError, match="result"):
        plot.histograms(result.to_dict())


# --- compare --------------------------------------------------------------------------------


def test_compare_one_line_per_result_on_a_log_axis(tmp_path, seed_results):
    runs = list(seed_results.values())
    figure = _render(plot.compare(runs), tmp_path / "compare.png")
    (ax,) = figure.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    for line, run in zip(lines, runs, strict=True):
        np.testing.assert_array_equal(line.get_ydata(), run.std)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "std"
    assert ax.get_title() == "layer std: tanh, 6 layers of 100, 200 samples"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["small", "big", "xavier"]


def test_compare_labels_value_and_scale(seed_results):
    figure = plot.compare(seed_results, value="mean")
    ax = figure.axes[0]
    assert ax.get_yscale() == "symlog"  # means have both signs: a log axis would hide them
    np.testing.assert_array_equal(ax.get_lines()[1].get_ydata(), seed_results["big"].mean)
    figure = plot.compare(list(seed_results.values()), ["a", "b", "c"], log=False)
    ax = figure.axes[0]
    assert ax.get_yscale() == "linear"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]


def test_compare_overlay_per_result(seed_results):
    runs = list(seed_results.values())
    guess = {"std": np.full(6, 0.5)}
    ax = plot.compare(runs, overlay=[None, guess, None]).axes[0]
    lines = ax.get_lines()
    assert len(lines) == 4
    np.testing.assert_array_equal(lines[2].get_ydata(), guess["std"])
    assert lines[2].get_color() == lines[1].get_color()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {"value": "variance"}, ValueError, "value must be a per-layer field"),
        ((["a"],), {}, ValueError, "labels"),
        ((), {"log": "yes"}, TypeError, "log"),
        ((), {"overlay": [None]}, ValueError, "overlay"),
        ((), {"overlay": [None, {"mean": np.ones(6)}, None]}, ValueError, r"overlay\[1\]"),
    ],
)
def test_compare_bad_input(seed_results, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot.compare(list(seed_results.values()), *args, **kwargs)


def test_compare_bad_results(seed_results):
    with pytest.raises(TypeError, match="results"):
        plot.compare(seed_results["big"])
    with pytest.raises(TypeError, match=r"results\[1\]"):
        plot.compare([seed_results["big"], "xavier"])
    with pytest.raises(ValueError, match="results"):
        plot.compare([])


# --- heatmap --------------------------------------------------------------------------------

SIGMA_W = (0.2, 1.0, 3.0)
SIGMA_B = (0.0, 0.3)
DEPTH = 4


@pytest.fixture(scope="module")
def sweep_frame():
    """A sweep's tidy table, built from separate runs over a σ_w × σ_b grid, 2 repeats."""
    frames = []
    width = 40
    for config_id, (sigma_w, sigma_b) in enumerate((w, b) for w in SIGMA_W for b in SIGMA_B):
        for repeat in range(2):
            seed = 10 * config_id + repeat
            result = initscope.propagate(
                [width] * DEPTH,
                init=initscope.schemes.normal(std=sigma_w / np.sqrt(width)),
                bias=sigma_b,
                n_samples=60,
                seed=seed,
            )
            frame = result.to_frame().drop(columns=["hist"])
            frame = frame.assign(
                sigma_w=sigma_w, sigma_b=sigma_b, config_id=config_id, repeat=repeat, seed=seed
            )
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _pivot(frame, layer, value="std", aggfunc="mean"):
    rows = frame[frame["layer"] == layer]
    return rows.pivot_table(index="sigma_b", columns="sigma_w", values=value, aggfunc=aggfunc)


def _mesh(figure):
    (mesh,) = [c for c in figure.axes[0].collections if isinstance(c, QuadMesh)]
    return mesh


def test_heatmap_array_is_the_pivoted_frame(tmp_path, sweep_frame):
    figure = _render(plot.heatmap(sweep_frame, "sigma_w", "sigma_b"), tmp_path / "heat.png")
    assert len(figure.axes) == 2  # the map and its colour bar
    ax, colorbar = figure.axes
    expected = _pivot(sweep_frame, DEPTH)
    mesh = _mesh(figure)
    np.testing.assert_allclose(np.asarray(mesh.get_array()), expected.to_numpy(), rtol=1e-14)
    assert ax.get_xlabel() == r"$\sigma_w$" and ax.get_ylabel() == r"$\sigma_b$"
    assert ax.get_title() == f"std at layer {DEPTH}, mean of 2 repeats"
    assert colorbar.get_ylabel() == "std"
    np.testing.assert_allclose(ax.get_xticks(), SIGMA_W)
    np.testing.assert_allclose(ax.get_yticks(), SIGMA_B)
    # σ_w = 0.2 kills the signal: the values span decades, so the colours are on a log scale
    assert expected.to_numpy().max() / expected.to_numpy().min() > 100
    assert isinstance(mesh.norm, LogNorm)


def test_heatmap_layer_aggregate_and_scale(sweep_frame):
    figure = plot.heatmap(sweep_frame, "sigma_w", "sigma_b", layer=2, aggregate="max", log=False)
    mesh = _mesh(figure)
    expected = _pivot(sweep_frame, 2, aggfunc="max")
    np.testing.assert_allclose(np.asarray(mesh.get_array()), expected.to_numpy(), rtol=1e-14)
    assert not isinstance(mesh.norm, LogNorm)
    assert figure.axes[0].get_title() == "std at layer 2, max of 2 repeats"

    figure = plot.heatmap(sweep_frame, "sigma_b", "sigma_w", value="mean", layer=1)
    mesh = _mesh(figure)
    expected = _pivot(sweep_frame, 1, value="mean").T
    np.testing.assert_allclose(np.asarray(mesh.get_array()), expected.to_numpy(), rtol=1e-14)
    assert mesh.norm.vmin == -mesh.norm.vmax  # signed values: centred at zero


def test_heatmap_last_layer_of_each_network(sweep_frame):
    # a deeper network next to the others: -1 still means each one's own last layer
    shallow = sweep_frame[~((sweep_frame.config_id == 0) & (sweep_frame.layer == DEPTH))]
    figure = plot.heatmap(shallow, "sigma_w", "sigma_b")
    array = np.asarray(_mesh(figure).get_array())
    layer3 = sweep_frame[(sweep_frame.config_id == 0) & (sweep_frame.layer == DEPTH - 1)]
    assert array[0, 0] == pytest.approx(layer3["std"].mean(), rel=1e-14)
    assert figure.axes[0].get_title().startswith("std at the last layer")


def test_heatmap_nan_repeat_shows_as_a_missing_cell(sweep_frame):
    frame = sweep_frame.copy()
    frame.loc[(frame.config_id == 1) & (frame.repeat == 0), "std"] = np.nan
    array = _mesh(plot.heatmap(frame, "sigma_w", "sigma_b")).get_array()
    assert np.ma.getmaskarray(array).sum() == 1
    assert np.ma.getmaskarray(array)[1, 0]  # sigma_b = 0.3, sigma_w = 0.2


def test_heatmap_refuses_several_configurations_per_cell(sweep_frame):
    other = sweep_frame.assign(activation="relu", config_id=sweep_frame.config_id + 100)
    mixed = pd.concat([sweep_frame, other], ignore_index=True)
    with pytest.raises(ValueError, match=r"several configurations.*activation"):
        plot.heatmap(mixed, "sigma_w", "sigma_b")
    figure = plot.heatmap(mixed[mixed.activation == "relu"], "sigma_w", "sigma_b")
    assert _mesh(figure).get_array().shape == (len(SIGMA_B), len(SIGMA_W))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("sigma", "sigma_b"), {}, ValueError, "x: the frame has no column 'sigma'"),
        (("sigma_w", "bias"), {}, ValueError, "y: the frame has no column 'bias'"),
        (("sigma_w", "sigma_b", "spread"), {}, ValueError, "value: the frame has no column"),
        (("sigma_w", "sigma_b", "init"), {}, ValueError, "value: column 'init' is not numeric"),
        (("sigma_w", "sigma_w"), {}, ValueError, "different columns"),
        (("sigma_w", "sigma_b"), {"layer": 5}, ValueError, "layer 5 is out of range"),
        (("sigma_w", "sigma_b"), {"layer": -5}, ValueError, "layer -5 is out of range"),
        (("sigma_w", "sigma_b"), {"layer": 0}, ValueError, "layer"),
        (("sigma_w", "sigma_b"), {"layer": 1.0}, TypeError, "layer"),
        (("sigma_w", "sigma_b"), {"aggregate": "average"}, ValueError, "aggregate"),
        (("sigma_w", "sigma_b"), {"log": "auto"}, TypeError, "log"),
        (("sigma_w", "sigma_b", "mean"), {"log": True}, ValueError, "log"),
        ((1, "sigma_b"), {}, TypeError, "x"),
    ],
)
def test_heatmap_bad_input(sweep_frame, args, kwargs, error, match):
    frame = sweep_frame
    if args[2:] == ("mean",):  # no positive value at all for a log scale
        frame = sweep_frame.assign(mean=-sweep_frame["mean"].abs() - 1.0)
    with pytest.raises(error, match=match):
        plot.heatmap(frame, *args, **kwargs)


def test_heatmap_needs_a_frame():
    with pytest.raises(TypeError, match="frame"):
        plot.heatmap({"sigma_w": [1.0]}, "sigma_w", "sigma_b")


# --- CLI ------------------------------------------------------------------------------------

RUN = ["run", "--widths", "40x4", "--samples", "60"]


@pytest.mark.parametrize("name", ["run.png", "run.svg", "run.pdf"])
def test_cli_run_plot(tmp_path, capsys, name):
    path = tmp_path / name
    assert main([*RUN, "--plot", str(path)]) == 0
    assert "Hidden layer 4 had mean" in capsys.readouterr().out
    head = path.read_bytes()[:8]
    assert head.startswith({"png": PNG, "svg": b"<?xml", "pdf": b"%PDF"}[name[-3:]])
    assert plt.get_fignums() == []  # the command keeps no figure open


def test_cli_run_several_inits_compares_them(tmp_path, capsys):
    path = tmp_path / "compare.png"
    assert main([*RUN, "--init", "small,big,xavier", "--plot", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "small" and "\nbig\n" in out and "\nxavier\n" in out
    assert path.read_bytes().startswith(PNG)
    assert main([*RUN, "--init", "small,big", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and '"init": ["big"' in lines[1]


@pytest.mark.parametrize(
    ("target", "match"), [("out.xyz", "--plot: cannot tell the format"), ("no/dir.png", "--plot")]
)
def test_cli_run_bad_plot_path_fails_before_running(tmp_path, capsys, target, match):
    assert main([*RUN, "--plot", str(tmp_path / target)]) == 2
    captured = capsys.readouterr()
    assert match in captured.err and captured.out == ""


def test_cli_plot_reads_csv_and_parquet(tmp_path, sweep_frame):
    csv = tmp_path / "sweep.csv"
    sweep_frame.to_csv(csv, index=False)
    out = tmp_path / "heat.png"
    assert main(["plot", str(csv), "--x", "sigma_w", "--y", "sigma_b", "--out", str(out)]) == 0
    assert out.read_bytes().startswith(PNG)

    pytest.importorskip("pyarrow")
    directory = tmp_path / "parquet"
    directory.mkdir()
    sweep_frame.iloc[:24].to_parquet(directory / "part-0.parquet")
    sweep_frame.iloc[24:].to_parquet(directory / "part-1.parquet")
    out = tmp_path / "heat.svg"
    args = ["--x", "sigma_w", "--y", "sigma_b", "--value", "mean", "--layer", "2", "--linear"]
    assert main(["plot", str(directory), *args, "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml")


def test_heatmap_of_a_written_sweep(tmp_path):
    if not hasattr(initscope, "sweep"):
        pytest.skip("no initscope.sweep here")
    pytest.importorskip("pyarrow")
    grid = {"sigma_w": [0.5, 1.5], "sigma_b": [0.0, 0.2, 0.4]}
    fixed = {"width": 20, "depth": 3, "n_samples": 40}
    out = tmp_path / "sweep"
    frame = initscope.sweep(grid, fixed=fixed, repeats=2, out=out, progress=False)
    mesh = _mesh(plot.heatmap(frame, "sigma_w", "sigma_b", "channel_var"))
    expected = _pivot(frame, 3, value="channel_var")
    np.testing.assert_allclose(np.asarray(mesh.get_array()), expected.to_numpy(), rtol=1e-14)
    png = tmp_path / "sweep.png"
    args = ["--x", "sigma_w", "--y", "sigma_b", "--value", "channel_var", "--out", str(png)]
    assert main(["plot", str(out), *args]) == 0
    assert png.read_bytes().startswith(PNG)


def test_cli_plot_bad_input(tmp_path, capsys, sweep_frame):
    csv = tmp_path / "sweep.csv"
    sweep_frame.to_csv(csv, index=False)
    out = str(tmp_path / "x.png")
    assert main(["plot", str(csv), "--x", "sigma", "--y", "sigma_b", "--out", out]) == 2
    assert "x: the frame has no column 'sigma'" in capsys.readouterr().err
    missing = str(tmp_path / "none.csv")
    assert main(["plot", missing, "--x", "sigma_w", "--y", "sigma_b", "--out", out]) == 2
    assert "RESULTS" in capsys.readouterr().err
    assert main(["plot", str(csv), "--x", "sigma_w", "--y", "sigma_b", "--out", "x.bad"]) == 2
    assert "--out" in capsys.readouterr().err


def _saved(monkeypatch):
    """The figures the CLI saves, kept open for the test to read."""
    cli = sys.modules["initscope.cli"]
    figures = []
    real = cli._save
    monkeypatch.setattr(cli, "_save", lambda figure, target: figures.append(figure))
    return figures, real


@pytest.mark.parametrize(
    ("inits", "flag", "scale"),
    [
        ("xavier", None, "linear"),
        ("xavier", "--log-std", "log"),
        ("xavier", "--linear-std", "linear"),
        ("small,xavier", None, "log"),
        ("small,xavier", "--log-std", "log"),
        ("small,xavier", "--linear-std", "linear"),
    ],
)
def test_cli_run_std_axis_follows_the_flag(tmp_path, monkeypatch, inits, flag, scale):
    figures, _ = _saved(monkeypatch)
    args = [*RUN, "--init", inits, "--plot", str(tmp_path / "std.png")]
    assert main(args + ([flag] if flag else [])) == 0
    (figure,) = figures
    # one init: the std panel is the second of mean, std, histograms; several: one panel
    ax = figure.axes[1] if "," not in inits else figure.axes[0]
    assert ax.get_yscale() == scale


def test_cli_run_log_and_linear_std_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main([*RUN, "--log-std", "--linear-std"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.fixture(scope="module")
def written_sweep(tmp_path_factory):
    """A sweep written to disk whose (sigma_w, sigma_b) cells hold two activations."""
    if not hasattr(initscope, "sweep"):
        pytest.skip("no initscope.sweep here")
    pytest.importorskip("pyarrow")
    out = tmp_path_factory.mktemp("where") / "sweep"
    grid = {"sigma_w": [0.5, 1.5], "sigma_b": [0.0, 0.3], "activation": ["tanh", "relu"]}
    initscope.sweep(grid, fixed={"width": 16, "depth": 3, "n_samples": 40}, out=out)
    return out


def test_cli_plot_where_selects_rows_before_plotting(monkeypatch, capsys, written_sweep):
    frame = initscope.load_sweep(written_sweep)
    axes = ["--x", "sigma_w", "--y", "sigma_b", "--value", "channel_var", "--linear"]
    out = ["--out", str(written_sweep.parent / "where.png")]
    # both activations in each cell: refused, until --where keeps one of them
    assert main(["plot", str(written_sweep), *axes, *out]) == 2
    assert "several configurations per (sigma_w, sigma_b) cell" in capsys.readouterr().err
    figures, _ = _saved(monkeypatch)
    assert main(["plot", str(written_sweep), *axes, "--where", "activation=relu", *out]) == 0
    relu = frame[(frame["activation"] == "relu") & (frame["layer"] == 3)]
    expected = relu.pivot_table(index="sigma_b", columns="sigma_w", values="channel_var")
    assert expected.shape == (2, 2)
    np.testing.assert_array_equal(np.asarray(_mesh(figures[0]).get_array()), expected.to_numpy())
    # numbers as numbers, repeatable: every condition holds
    where = ["--where", "activation=tanh", "--where", "sigma_b=0.3"]
    assert main(["plot", str(written_sweep), *axes, *where, *out]) == 0
    rows = frame[(frame["activation"] == "tanh") & (frame["sigma_b"] == 0.3)]
    rows = rows[rows["layer"] == 3].sort_values("sigma_w")
    np.testing.assert_array_equal(
        np.asarray(_mesh(figures[1]).get_array()).reshape(-1), rows["channel_var"].to_numpy()
    )


@pytest.mark.parametrize(
    ("where", "match"),
    [
        ("activation", "--where: write KEY=VALUE"),
        ("=relu", "--where: write KEY=VALUE"),
        ("nope=1", "--where: the table has no column 'nope'; it has sigma_w"),
        ("sigma_b=abc", "--where: sigma_b holds numbers, got 'abc'"),
        ("activation=selu", "no row of the table matches"),
    ],
)
def test_cli_plot_where_bad_input(capsys, written_sweep, where, match):
    args = ["--x", "sigma_w", "--y", "sigma_b", "--where", where]
    out = str(written_sweep.parent / "bad.png")
    assert main(["plot", str(written_sweep), *args, "--out", out]) == 2
    assert match in capsys.readouterr().err
    assert not os.path.exists(out)


def test_where_reads_booleans_and_text():
    cli = sys.modules["initscope.cli"]
    frame = pd.DataFrame(
        {"gradients": [True, False, True], "init": ["xavier", "he_normal", "he_normal"]}
    )
    assert list(cli._where(frame, ["gradients=true"]).index) == [0, 2]
    assert list(cli._where(frame, ["gradients=0", "init=he_normal"]).index) == [1]
    with pytest.raises(ValueError, match="gradients is true or false, got 'maybe'"):
        cli._where(frame, ["gradients=maybe"])
