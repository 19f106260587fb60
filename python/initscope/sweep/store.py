"""Writing a sweep as it runs, and reading it back.

An ``out`` directory holds::

    sweep.json                    what sweep this is: its identity and configuration order
    frame/part-<hash>.parquet     main-table rows of a group of finished configurations
    histograms/part-<hash>.parquet  their histogram rows
    grad_histograms/part-<hash>.parquet  their gradient histogram rows (runs with gradients)

(``.csv`` parts instead when ``out`` ends in ``.csv``.)  Every file is written under a
temporary name in the same directory and renamed, which POSIX makes atomic: a crash leaves
either the whole part or none of it.  A group's histogram parts are renamed before its frame
part, and a configuration counts as done when its frame part exists, so a configuration is
never half there; a histogram part without its frame part is a leftover, removed on resume.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Store", "load_sweep"]

MANIFEST = "sweep.json"
FRAME_DIR = "frame"
HIST_DIR = "histograms"
GRAD_HIST_DIR = "grad_histograms"
_DIRS = (FRAME_DIR, HIST_DIR, GRAD_HIST_DIR)


def _kind(path: Path) -> str:
    return "csv" if path.name.endswith(".csv") else "parquet"


def _check_engine(kind: str, name: str) -> None:
    try:
        import pandas  # noqa: F401
    except ImportError:
        raise ImportError("sweeps need pandas: pip install 'initscope[sweep]'") from None
    if kind == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(
                f"{name} is written as Parquet, which needs pyarrow: pip install "
                f"'initscope[sweep]', or give a directory name ending in .csv"
            ) from None


class Store:
    """The ``out`` directory of one sweep."""

    def __init__(self, out: Any, identity: dict[str, Any], sweep_id: str, resume: bool) -> None:
        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out must be a directory path, got {type(out).__name__}")
        self.path = Path(out)
        self.kind = _kind(self.path)
        _check_engine(self.kind, "out")
        self.sweep_id = sweep_id
        self.identity = identity
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"out must be a directory, but {self.path} is a file")
        manifest = self.path / MANIFEST
        if manifest.exists():
            try:
                held = json.loads(manifest.read_text())["sweep_id"]
            except (ValueError, KeyError, OSError):
                held = None
            if held != sweep_id or not resume:
                if resume:
                    raise ValueError(
                        f"out {str(self.path)!r} holds the results of another sweep; "
                        f"choose another out, or pass resume=False to discard them"
                    )
                print(
                    f"initscope: discarding the results in {self.path} (resume=False)",
                    file=sys.stderr,
                )
                self._clear()
        elif self.path.exists() and any(self.path.iterdir()):
            raise ValueError(
                f"out {str(self.path)!r} is not empty and holds no sweep: choose an empty "
                f"or new directory"
            )
        try:
            for sub in _DIRS:
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            probe = self.path / f".probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as error:
            raise ValueError(f"out {str(self.path)!r} is not writable: {error}") from None

    def _clear(self) -> None:
        for sub in _DIRS:
            shutil.rmtree(self.path / sub, ignore_errors=True)
        (self.path / MANIFEST).unlink(missing_ok=True)

    def start(
        self, config_ids: Sequence[str], columns: Sequence[str], gradients: bool = False
    ) -> set[str]:
        """Write the manifest, clear leftovers, and return the configurations already done."""
        manifest = {
            "sweep_id": self.sweep_id,
            "identity": self.identity,
            "columns": list(columns),
            "config_ids": list(config_ids),
            "gradients": gradients,
        }
        self._atomic(self.path / MANIFEST, lambda p: p.write_text(json.dumps(manifest)))
        for sub in _DIRS:
            for leftover in (self.path / sub).glob(".*.tmp"):
                leftover.unlink(missing_ok=True)
        frames = {p.name for p in (self.path / FRAME_DIR).glob(f"part-*.{self.kind}")}
        for sub in (HIST_DIR, GRAD_HIST_DIR):
            for orphan in (self.path / sub).glob(f"part-*.{self.kind}"):
                if orphan.name not in frames:
                    orphan.unlink(missing_ok=True)
        done: set[str] = set()
        for name in sorted(frames):
            done.update(_read(self.path / FRAME_DIR / name, self.kind, ["config_id"])["config_id"])
        return done

    def write(self, frame: Any, histograms: Any, grad_histograms: Any = None) -> None:
        """Add one part: the histograms first, then the frame that marks them done."""
        name = f"part-{uuid.uuid4().hex}.{self.kind}"
        self._atomic(self.path / HIST_DIR / name, lambda p: _write(histograms, p, self.kind))
        if grad_histograms is not None and len(grad_histograms):
            self._atomic(
                self.path / GRAD_HIST_DIR / name, lambda p: _write(grad_histograms, p, self.kind)
            )
        self._atomic(self.path / FRAME_DIR / name, lambda p: _write(frame, p, self.kind))

    @staticmethod
    def _atomic(target: Path, writer: Any) -> None:
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            writer(temporary)
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def _write(frame: Any, path: Path, kind: str) -> None:
    if kind == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False, engine="pyarrow")


def _read(path: Path, kind: str, columns: list[str] | None = None) -> Any:
    import pandas as pd

    if kind == "csv":
        frame = pd.read_csv(
            path, usecols=columns, dtype={"config_id": str, "seed": "uint64"}, keep_default_na=True
        )
    else:
        frame = pd.read_parquet(path, columns=columns, engine="pyarrow")
    return frame


def load_sweep(path: Any) -> Any:
    """Read a sweep written with ``out=path`` back into its tables.

    Parameters
    ----------
    path
        The ``out`` directory of :func:`initscope.sweep` (complete or not).

    Returns
    -------
    SweepFrame
        The main table (a :class:`pandas.DataFrame`), rows in the grid's order, then repeat,
        then layer, with the histogram tables as ``.histograms`` and ``.grad_histograms``:
        what ``sweep`` returned.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a directory path, got {type(path).__name__}")
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"path {str(root)!r} holds no sweep (no {MANIFEST} in it)")
    kind = _kind(root)
    _check_engine(kind, "path")
    import pandas as pd

    from .frames import _typed, empty_tables, finish

    manifest = json.loads(manifest_path.read_text())
    order = {cid: i for i, cid in enumerate(manifest["config_ids"])}
    names = sorted(p.name for p in (root / FRAME_DIR).glob(f"part-*.{kind}"))
    if not names:
        frame, histograms, grad_histograms = empty_tables(
            manifest["columns"], manifest.get("gradients", False)
        )
    else:
        frame = _typed(pd.concat([_read(root / FRAME_DIR / n, kind) for n in names]))
        histograms = _read_parts(root / HIST_DIR, names, kind, 1)
        grad_histograms = _read_parts(root / GRAD_HIST_DIR, names, kind, 2)
    return finish(frame, histograms, order, grad_histograms)


def _read_parts(directory: Path, names: list[str], kind: str, which: int) -> Any:
    """The histogram parts of ``names`` that exist in ``directory``, as one table."""
    import pandas as pd

    from .frames import _typed, empty_tables

    parts = [_read(directory / n, kind) for n in names if (directory / n).exists()]
    return _typed(pd.concat(parts)) if parts else empty_tables([])[which]
