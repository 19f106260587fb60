"""The ``initscope`` command line.

``initscope run --widths 500x10 --init xavier --activation tanh --samples 1000`` prints the
classic per-layer table; ``--json`` prints the whole result; ``--init small,big,xavier`` runs
one network per scheme; ``--plot out.png`` draws the result (several: compared in one figure).
``initscope plot RESULTS --x sigma_w --y sigma_b --out fig.png`` draws a written sweep as a
heatmap.  The benchmark suite is not part of the package: it lives in the source checkout, as
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
        )
        for init in inits
    ]
    for init, result in zip(inits, results, strict=True):
        if args.json:  # one JSON document per line, so one init prints what it always did
            json.dump(result.to_dict(), sys.stdout)
            sys.stdout.write("\n")
        else:
            if len(results) > 1:
                print(init)
            print(result)
    if target is not None:
        from .plot import compare

        if len(results) == 1:
            figure = results[0].plot(log_std=args.log_std)
        else:
            figure = compare(results, inits, value="std", log=True)
        _save(figure, target)
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


def _plot(args: argparse.Namespace) -> int:
    from .plot import heatmap

    target = _figure_path(args.out, "--out")
    frame = _read_table(args.results)
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
    run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    run.add_argument(
        "--plot", metavar="PATH", help="draw the result to PATH (.png, .svg, .pdf, ...)"
    )
    run.add_argument("--log-std", action="store_true", help="--plot: a log axis for the std")
    run.set_defaults(handler=_run)

    from .plot import AGGREGATES

    plot = sub.add_parser("plot", help="draw a written sweep as a heatmap")
    plot.add_argument("results", metavar="RESULTS", help="a Parquet directory or a CSV file")
    plot.add_argument("--x", required=True, help="column along x, e.g. sigma_w")
    plot.add_argument("--y", required=True, help="column along y, e.g. sigma_b")
    plot.add_argument("--value", default="std", help="column to draw (default: std)")
    plot.add_argument("--layer", type=int, default=-1, help="from 1; -1 (default) is the last")
    plot.add_argument("--aggregate", default="mean", choices=AGGREGATES, help="over repeats")
    scale = plot.add_mutually_exclusive_group()
    scale.add_argument("--log", action="store_true", help="log colour scale")
    scale.add_argument("--linear", dest="log", action="store_false", help="linear colour scale")
    plot.add_argument("--out", required=True, metavar="PATH", help=".png, .svg, .pdf, ...")
    plot.set_defaults(handler=_plot, log=None)  # None: log when the values span decades

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
