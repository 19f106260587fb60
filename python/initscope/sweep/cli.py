"""``initscope sweep sweep.toml --out results/``: a sweep described in a TOML file.

The file holds a ``[grid]`` table (parameter names to lists of values), an optional
``[fixed]`` table, and optional top-level ``repeats``, ``seed`` and ``max_memory``; see
``examples/phase_diagram.toml``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "read_toml", "run_sweep"]

TOP_LEVEL = ("grid", "fixed", "repeats", "seed", "max_memory")


def read_toml(path: str | Path) -> dict[str, Any]:
    """The sweep a TOML file describes, as keywords of :func:`initscope.sweep`."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError(
                "reading TOML on Python 3.10 needs tomli: pip install tomli"
            ) from None
    try:
        with open(path, "rb") as stream:
            data = tomllib.load(stream)
    except OSError as error:
        raise ValueError(f"cannot read the sweep file {str(path)!r}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"the sweep file {str(path)!r} is not valid TOML: {error}") from None
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(
            f"the sweep file {str(path)!r} has unknown entries {', '.join(unknown)}; "
            f"valid ones are {', '.join(TOP_LEVEL)} (put parameters under [grid] or [fixed])"
        )
    if "grid" not in data:
        raise ValueError(f"the sweep file {str(path)!r} has no [grid] table")
    return data


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` command to the ``initscope`` command line's subparsers."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a grid of configurations from a TOML file, written as they finish",
        description="Run every configuration of a TOML file's [grid] (with its [fixed] "
        "parameters) and write the results to --out as they finish; run the same command "
        "again to resume after an interruption.",
    )
    parser.add_argument("file", help="the sweep's TOML file, e.g. examples/phase_diagram.toml")
    parser.add_argument("--out", required=True, help="directory the results are written to")
    parser.add_argument("--workers", type=int, default=None, help="runs side by side here")
    parser.add_argument(
        "--scheduler", default=None, help="a Dask scheduler's address, e.g. tcp://host:8786"
    )
    parser.add_argument(
        "--yes", action="store_true", help="run a grid of more than 1,000,000 configurations"
    )
    parser.add_argument(
        "--restart", action="store_true", help="discard what --out holds and start over"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_sweep)
    return parser


def run_sweep(args: argparse.Namespace) -> int:
    """Run the ``sweep`` command; returns the exit status."""
    from .api import MAX_CONFIGS, SweepError, sweep

    spec = read_toml(args.file)
    executor = None
    client = None
    if args.scheduler is not None:
        try:
            import distributed
        except ImportError:
            raise ImportError("--scheduler needs Dask: pip install 'initscope[dask]'") from None
        try:
            client = distributed.Client(args.scheduler)
        except (OSError, TimeoutError) as error:
            raise ValueError(f"--scheduler: cannot reach {args.scheduler!r}: {error}") from None
        executor = client.get_executor()
    try:
        frame = sweep(
            spec["grid"],
            fixed=spec.get("fixed"),
            repeats=spec.get("repeats", 1),
            seed=spec.get("seed", 0),
            max_memory=spec.get("max_memory"),
            executor=executor,
            workers=args.workers,
            out=args.out,
            resume=not args.restart,
            progress=False if args.no_progress else None,  # None: when stderr is a terminal
            max_configs=None if args.yes else MAX_CONFIGS,
        )
    except SweepError as error:
        print(f"initscope: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninitscope: interrupted; finished configurations are kept in {args.out}: "
            f"run the same command again to go on",
            file=sys.stderr,
        )
        return 130
    finally:
        if client is not None:
            client.close()
    print(
        f"{frame['config_id'].nunique()} configurations, {len(frame)} rows in {args.out}; "
        f"read them with initscope.load_sweep({str(args.out)!r})"
    )
    return 0
