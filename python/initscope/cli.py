"""The ``initscope`` command line.

``initscope run --widths 500x10 --init xavier --activation tanh --samples 1000`` prints the
classic per-layer table; ``--json`` prints the whole result; ``--init small,big,xavier`` runs
one network per scheme; ``--plot out.png`` draws the result (several: compared in one figure).
``initscope plot RESULTS --x sigma_w --y sigma_b --out fig.png`` draws a written sweep as a
heatmap (``--where width=256``: of the rows where a column has that value).  ``initscope
theory --activation tanh --sigma-w 1.5 --depth 10`` prints the mean-field
prediction, ``run ... --theory`` measured against predicted, ``initscope calibrate
--activation gelu`` the critical and variance-preserving gains (``--widths``: and LSUV's).
The benchmark suite is not part of the package: it lives in the source checkout, as
``python bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

__all__ = ["main", "parse_widths"]


def parse_widths(text: str) -> list[int]:
    """``"500x10"`` -> ten layers of 500; ``"784,512x2,10"`` -> [784, 512, 512, 10]."""
    widths: list[int] = []
    for part in text.split(","):
        size, _, count = part.strip().partition("x")
        try:
            widths += [int(size)] * (int(count) if count else 1)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--widths: cannot read {part!r}; write e.g. 500x10 or 784,512x2,10"
            ) from None
    return widths


def _figure_path(path: str, option: str) -> Path:
    """A path matplotlib can write, checked before any work; selects the file-only canvas."""
    from .plot._canvas import require_matplotlib

    matplotlib = require_matplotlib()
    if "matplotlib.pyplot" not in sys.modules:
        # the command only writes files: a GUI backend from a matplotlibrc would open
        # windows for nothing, or fail without a display
        matplotlib.use("Agg")
    from matplotlib.backend_bases import FigureCanvasBase

    target = Path(path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if target.suffix.lower().lstrip(".") not in formats:
        raise ValueError(
            f"{option}: cannot tell the format of {path!r}; end it with .png, .svg or .pdf "
            f"(or any of {', '.join(sorted(formats))})"
        )
    if not target.parent.is_dir():
        raise ValueError(f"{option}: the directory {str(target.parent)!r} does not exist")
    return target


def _save(figure: Figure, target: Path) -> None:
    import matplotlib.pyplot as plt

    figure.savefig(target)
    plt.close(figure)  # an in-process caller keeps no figure it never sees
    print(f"wrote {target}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from .api import propagate

    inits = [name.strip() for name in args.init.split(",")]
    if not all(inits):
        raise ValueError(f"--init: empty scheme name in {args.init!r}")
    target = _figure_path(args.plot, "--plot") if args.plot else None
    if target is not None and args.theory and (args.gradients or len(inits) > 1):
        # those figures have no predicted curves: say so rather than drop them unseen
        drawn = "the gradient figure" if len(inits) == 1 else "one line per init"
        print(
            f"initscope: note: --plot draws {drawn}, which has no theory overlay: --theory "
            "only adds the printed comparison (the overlay needs one init without "
            "--gradients)",
            file=sys.stderr,
        )
    results = [
        propagate(
            args.widths,
            init=init,
            activation=args.activation,
            n_samples=args.samples,
            seed=args.seed,
            dtype=args.dtype,
            bias=args.bias,
            bins=args.bins,
            backend=args.backend,
            threads=args.threads,
            gradients=args.gradients,
        )
        for init in inits
    ]
    for init, result in zip(inits, results, strict=True):
        if args.json:  # one JSON document per line, so one init prints what it always did
            document = result.to_dict()
            if args.theory:
                document["theory"] = _theory_records(result)
            json.dump(document, sys.stdout)
            sys.stdout.write("\n")
        else:
            if len(results) > 1:
                print(init)
            print(result)
            if args.theory:
                print("\nmeasured against predicted (mean-field theory; z = difference / spread):")
                print(_theory_text(result))
    if target is not None:
        from .plot import compare

        if len(results) == 1:
            figure = results[0].plot(
                log_std=bool(args.log_std),
                gradients=args.gradients,
                theory=bool(args.theory and not args.gradients),
            )
        else:
            value = "grad_std" if args.gradients else "std"
            log = True if args.log_std is None else args.log_std  # decades apart: log
            figure = compare(results, inits, value=value, log=log)
        _save(figure, target)
    return 0


def _theory_text(result: Any) -> str:
    """The comparison table of ``result.compare_theory()``, every row."""
    table = result.compare_theory()
    to_string = getattr(table, "to_string", None)
    return str(to_string() if to_string is not None else table)


def _theory_records(result: Any) -> list[dict[str, Any]]:
    """The comparison as JSON records (NaN and inf become None)."""
    import math

    table = result.compare_theory()
    if hasattr(table, "reset_index"):
        columns = {k: list(v) for k, v in table.reset_index().to_dict("list").items()}
    else:
        columns = {k: list(v) for k, v in table.items()}
    rows = []
    for i in range(len(columns["layer"])):
        row: dict[str, Any] = {}
        for key, values in columns.items():
            value = values[i]
            if hasattr(value, "item"):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            row[key] = value
        rows.append(row)
    return rows


def _activation_arg(name: str, param: float | None) -> Any:
    return name if param is None else (name, param)


def _theory(args: argparse.Namespace) -> int:
    from .theory import predict

    prediction = predict(
        _activation_arg(args.activation, args.param),
        args.sigma_w,
        args.sigma_b,
        depth=None if args.widths else args.depth,
        widths=args.widths,
        n_samples=args.samples if args.widths else None,
        input_sq_mean=args.input_sq_mean,
    )
    if args.json:
        document = prediction.to_dict()
        if prediction.fixed is not None:
            fixed = prediction.fixed
            document["fixed_point"] = {
                key: getattr(fixed, key)
                for key in ("q_star", "exists", "stable", "length_slope", "chi1", "xi_q",
                            "c_star", "chi_c", "xi_c")
            }  # fmt: skip
        json.dump(document, sys.stdout, default=float)
        sys.stdout.write("\n")
    else:
        print(prediction)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .calibrate import critical_gain, lsuv, variance_preserving_gain
    from .theory import fixed_point

    activation = _activation_arg(args.activation, args.param)
    try:
        critical = f"{critical_gain(activation, args.sigma_b):.6g}"
    except ValueError as error:
        critical = f"none ({error})"
    gain = variance_preserving_gain(activation, args.sigma_b, args.target_q)
    first = variance_preserving_gain(
        activation, args.sigma_b, args.target_q, input_sq_mean=args.input_sq_mean
    )
    fp = fixed_point(activation, gain, args.sigma_b, q_init=args.target_q, correlation=False)
    if abs(fp.length_slope - 1.0) <= 1e-9:
        stability = "marginal: at finite width the length wanders, as a random walk"
    elif fp.stable:
        stability = "stable"
    else:
        stability = "unstable: at finite width the length runs away from q*"
    print(f"critical sigma_w (chi1 = 1 at sigma_b = {args.sigma_b:g}): {critical}")
    print(
        f"variance-preserving sigma_w (q* = {args.target_q:g}): {gain:.6g} "
        f"(V'(q*) = {fp.length_slope:.4g}, {stability}; chi1 = {fp.chi1:.4g})"
    )
    print(f"first layer's sigma_w for inputs with E[x^2] = {args.input_sq_mean:g}: {first:.6g}")
    if args.widths:
        result = lsuv(
            args.widths,
            activation,
            init=args.init,
            target_std=args.target_std,
            tol=args.tol,
            n_samples=args.samples,
            bias=args.sigma_b,
            seed=args.seed,
        )
        print(f"\nLSUV ({args.init}, target pre_std {args.target_std:g}, tol {args.tol:g}):")
        print(result)
    return 0


def _read_table(path: str) -> pandas.DataFrame:
    """The main table of a written sweep (its ``out`` directory), or a Parquet or CSV file."""
    import initscope

    source = Path(path)
    if not source.exists():
        raise ValueError(f"RESULTS: {path!r} does not exist")
    import pandas as pd

    if source.is_dir():
        loader = getattr(initscope, "load_sweep", None)
        try:
            if loader is not None:
                table: pandas.DataFrame = loader(source)
                return table
        except ValueError:
            if not any(source.glob("*.parquet")):  # not a Parquet dataset either
                raise
        return pd.read_parquet(source)
    if source.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(source)
    if source.suffix.lower() == ".csv":
        return pd.read_csv(source)
    raise ValueError(f"RESULTS: {path!r} is neither a sweep's directory nor .parquet nor .csv")


def _where(frame: pandas.DataFrame, conditions: Sequence[str]) -> pandas.DataFrame:
    """The rows of ``frame`` where every ``KEY=VALUE`` of ``conditions`` holds; ``VALUE`` is
    read as the column's type (a number for numeric columns, true/false for booleans, else
    the text the column shows)."""
    import pandas as pd

    selected = pd.Series(True, index=frame.index)
    for condition in conditions:
        key, equals, text = condition.partition("=")
        key, text = key.strip(), text.strip()
        if not equals or not key:
            raise ValueError(f"--where: write KEY=VALUE, e.g. sigma_b=0.1; got {condition!r}")
        if key not in frame.columns:
            names = ", ".join(map(str, frame.columns))
            raise ValueError(f"--where: the table has no column {key!r}; it has {names}")
        column = frame[key]
        if pd.api.types.is_bool_dtype(column):
            truth = {"true": True, "1": True, "false": False, "0": False}.get(text.lower())
            if truth is None:
                raise ValueError(f"--where: {key} is true or false, got {text!r}")
            selected &= column == truth
        elif pd.api.types.is_numeric_dtype(column):
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"--where: {key} holds numbers, got {text!r}") from None
            selected &= column == number
        else:
            selected &= column.astype(str) == text
    if not selected.any():
        raise ValueError(f"--where {' '.join(conditions)}: no row of the table matches")
    return frame[selected]


def _plot(args: argparse.Namespace) -> int:
    from .plot import heatmap

    target = _figure_path(args.out, "--out")
    frame = _read_table(args.results)
    if args.where:
        frame = _where(frame, args.where)
    figure = heatmap(
        frame,
        args.x,
        args.y,
        args.value,
        layer=args.layer,
        aggregate=args.aggregate,
        log=args.log,
    )
    _save(figure, target)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initscope", description="Weight-initialization experiments on deep networks."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="propagate random inputs and print per-layer statistics")
    run.add_argument("--widths", type=parse_widths, default=[500] * 10, help="e.g. 500x10")
    run.add_argument("--init", default="xavier", help="scheme name, e.g. small, big, xavier")
    run.add_argument("--activation", default="tanh")
    run.add_argument("--samples", type=int, default=1000)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    run.add_argument("--bias", type=float, default=0.0, help="std of the biases")
    run.add_argument("--bins", type=int, default=30)
    run.add_argument("--backend", default="auto", choices=["auto", "cpp", "numba", "numpy"])
    run.add_argument("--threads", type=int, default=None)
    run.add_argument(
        "--gradients",
        action="store_true",
        help="back-propagate a random output gradient: a second table (--plot: its figure)",
    )
    run.add_argument(
        "--theory",
        action="store_true",
        help="print measured against predicted (mean-field theory) per layer",
    )
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument(
        "--plot", metavar="PATH", help="draw the result to PATH (.png, .svg, .pdf, ...)"
    )
    std_scale = run.add_mutually_exclusive_group()
    std_scale.add_argument(
        "--log-std",
        action="store_true",
        help="--plot: a log axis for the std (the default when comparing several inits)",
    )
    std_scale.add_argument(
        "--linear-std",
        dest="log_std",
        action="store_false",
        help="--plot: a linear axis for the std (the default for one init)",
    )
    run.set_defaults(handler=_run, log_std=None)

    from .plot import AGGREGATES

    plot = sub.add_parser("plot", help="draw a written sweep as a heatmap")
    plot.add_argument("results", metavar="RESULTS", help="a Parquet directory or a CSV file")
    plot.add_argument("--x", required=True, help="column along x, e.g. sigma_w")
    plot.add_argument("--y", required=True, help="column along y, e.g. sigma_b")
    plot.add_argument("--value", default="std", help="column to draw (default: std)")
    plot.add_argument("--layer", type=int, default=-1, help="from 1; -1 (default) is the last")
    plot.add_argument("--aggregate", default="mean", choices=AGGREGATES, help="over repeats")
    plot.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep the rows where column KEY equals VALUE (repeatable: all must hold), "
        "e.g. --where width=256 --where init=xavier",
    )
    scale = plot.add_mutually_exclusive_group()
    scale.add_argument("--log", action="store_true", help="log colour scale")
    scale.add_argument("--linear", dest="log", action="store_false", help="linear colour scale")
    plot.add_argument("--out", required=True, metavar="PATH", help=".png, .svg, .pdf, ...")
    plot.set_defaults(handler=_plot, log=None)  # None: log when the values span decades

    theory = sub.add_parser("theory", help="print the mean-field prediction per layer")
    theory.add_argument("--activation", default="tanh")
    theory.add_argument("--param", type=float, default=None, help="leaky_relu slope, elu alpha")
    theory.add_argument("--sigma-w", type=float, default=1.0, help="sqrt(fan_in Var W)")
    theory.add_argument("--sigma-b", type=float, default=0.0, help="std of the biases")
    theory.add_argument("--depth", type=int, default=10)
    theory.add_argument(
        "--widths", type=parse_widths, default=None, help="e.g. 500x10: adds the spreads"
    )
    theory.add_argument("--samples", type=int, default=1000, help="with --widths")
    theory.add_argument("--input-sq-mean", type=float, default=1.0, help="E[x^2] of the inputs")
    theory.add_argument("--json", action="store_true")
    theory.set_defaults(handler=_theory)

    calibrate = sub.add_parser("calibrate", help="print the critical and variance-preserving gains")
    calibrate.add_argument("--activation", default="tanh")
    calibrate.add_argument("--param", type=float, default=None, help="leaky_relu slope, elu alpha")
    calibrate.add_argument("--sigma-b", type=float, default=0.0, help="std of the biases")
    calibrate.add_argument("--target-q", type=float, default=1.0, help="q* to keep")
    calibrate.add_argument("--input-sq-mean", type=float, default=1.0)
    calibrate.add_argument(
        "--widths", type=parse_widths, default=None, help="also run LSUV on this network"
    )
    calibrate.add_argument("--init", default="orthogonal", help="LSUV's base scheme")
    calibrate.add_argument("--target-std", type=float, default=1.0)
    calibrate.add_argument("--tol", type=float, default=0.01)
    calibrate.add_argument("--samples", type=int, default=1000)
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.set_defaults(handler=_calibrate)

    from .sweep.cli import add_parser as add_sweep_parser

    add_sweep_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``initscope`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        handler: Any = args.handler
        return int(handler(args))
    except (ValueError, TypeError, ImportError) as error:
        print(f"initscope: error: {error}", file=sys.stderr)
        return 2
