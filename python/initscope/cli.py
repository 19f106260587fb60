"""The ``initscope`` command line.

``initscope run --widths 500x10 --init xavier --activation tanh --samples 1000`` prints the
classic per-layer table; ``--json`` prints the whole result.  The benchmark suite is not part
of the package: it lives in the source checkout, as ``python bench/run.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

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


def _run(args: argparse.Namespace) -> int:
    from .api import propagate

    result = propagate(
        args.widths,
        init=args.init,
        activation=args.activation,
        n_samples=args.samples,
        seed=args.seed,
        dtype=args.dtype,
        bias=args.bias,
        bins=args.bins,
        backend=args.backend,
        threads=args.threads,
    )
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(result)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``initscope`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, TypeError, ImportError) as error:
        print(f"initscope: error: {error}", file=sys.stderr)
        return 2
