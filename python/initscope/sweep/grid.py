"""Turning a sweep's ``grid`` and ``fixed`` parameters into checked configurations.

Every value is checked and normalised once, before any run: a configuration is then a
dict of :func:`initscope.propagate` keywords plus the column values the tables show, and
is named by a stable hash of its normalised keywords (``config_id``).  The hash covers
everything that changes the numbers and nothing that does not (threads, chunk_size), plus
:data:`FORMAT_VERSION`, so a change in what the tables hold never mixes old and new rows.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._checks import float_dtype, positive_int, real
from ..activations import activation as resolve_activation
from ..backends import BACKENDS
from ..schemes import Scheme, scheme, variance_scaling

__all__ = [
    "FORMAT_VERSION",
    "KEYS",
    "Config",
    "expand",
    "normalise",
    "repeat_seed",
    "sweep_id",
]

#: Version of what a written sweep holds (columns, hashes, seeds): part of every hash.
FORMAT_VERSION = 3

#: Keywords of :func:`initscope.propagate` a sweep accepts in ``grid`` or ``fixed``.
PROPAGATE_KEYS = (
    "widths",
    "init",
    "activation",
    "n_samples",
    "input_dim",
    "bias",
    "seed",
    "dtype",
    "bins",
    "hist_range",
    "backend",
    "chunk_size",
    "gradients",
    "grad_bins",
    "grad_range",
)
#: Conveniences: ``widths = [width] * depth``; ``sigma_w`` weights of variance
#: ``sigma_w**2 / fan_in``; ``sigma_b`` the bias std.
CONVENIENCE_KEYS = ("width", "depth", "sigma_w", "sigma_b")
KEYS = PROPAGATE_KEYS + CONVENIENCE_KEYS

#: Keywords of propagate a sweep decides itself or cannot store, with the reason.
_REFUSED = {
    "threads": "the sweep chooses the threads of each run (results do not depend on them)",
    "max_memory": "pass max_memory to sweep() itself",
    "keep_activations": "a sweep keeps statistics, not activation arrays",
    "inputs": "a sweep draws its inputs from each run's seed; sweep n_samples instead",
    "output_grad": "a sweep draws its output gradients from each run's seed",
}

#: Keywords that change no number of a run, so they stay out of the hash.
_UNHASHED = ("chunk_size",)

#: Defaults of propagate, so that a keyword left out and one given at its default hash alike.
_DEFAULTS: dict[str, Any] = {
    "init": "xavier",
    "activation": "tanh",
    "n_samples": 1000,
    "input_dim": None,
    "bias": 0.0,
    "dtype": "float64",
    "bins": 30,
    "hist_range": [-1.0, 1.0],
    "backend": "auto",
}


def _where(source: str, key: str) -> str:
    return f"{source}[{key!r}]"


def _init_token(value: Any, name: str) -> tuple[Any, Any]:
    """(hashable JSON form, column value) of one init; raises naming ``name``."""
    if isinstance(value, str):
        scheme(value)  # unknown names raise ValueError listing the valid ones
        return value, value
    if isinstance(value, Scheme):
        # frozen dataclass reprs list every parameter, so equal schemes hash alike
        return repr(value), repr(value)
    if callable(value):
        scheme(value)
        label = _callable_label(value)
        return f"callable:{label}", label
    raise TypeError(
        f"{name} must be a scheme name, a Scheme or a callable f(fan_in, fan_out), "
        f"got {type(value).__name__}"
    )


def _callable_label(value: Any) -> str:
    """A name for a user callable that is the same in every process: its import path, or
    its repr when that holds no memory address (``functools.partial`` of a function)."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return f"{module}.{qualname}"
    text = repr(value)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def _activation_token(value: Any, name: str) -> tuple[Any, Any]:
    try:
        if isinstance(value, tuple):
            act = resolve_activation(*value)
        else:
            act = resolve_activation(value)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{name}: {error}") from None
    column = value if isinstance(value, str) else f"{act.name}({act.param:g})"
    return [act.name, act.param], column


def _per_layer(value: Any, name: str, one: Any) -> tuple[Any, Any]:
    """A list is one value per layer; the column then shows the list as text."""
    if isinstance(value, list):
        if not value:
            raise ValueError(f"{name} must not be an empty list")
        tokens = [one(v, f"{name}[{i}]") for i, v in enumerate(value)]
        return [t[0] for t in tokens], json.dumps([t[1] for t in tokens])
    return one(value, name)


def _bias(value: Any, name: str) -> tuple[Any, Any]:
    b = real(value, name, low=0.0)
    return b, b


def normalise(key: str, value: Any, name: str) -> tuple[Any, Any]:
    """``(token, column)`` of ``value`` for ``key``: the token enters the hash and the
    run, the column is what the tables show.  Raises TypeError/ValueError naming ``name``."""
    if key in ("n_samples", "bins", "width", "depth", "chunk_size", "grad_bins"):
        n = positive_int(value, name)
        return n, n
    if key == "input_dim":
        if value is None:
            return None, None
        n = positive_int(value, name)
        return n, n
    if key == "widths":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | np.ndarray):
            raise TypeError(f"{name} must be a list of layer sizes, got {value!r}")
        if len(value) == 0:
            raise ValueError(f"{name} must name at least one layer")
        sizes = [positive_int(w, f"{name}[{i}]") for i, w in enumerate(value)]
        return sizes, json.dumps(sizes)
    if key == "seed":
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        if not 0 <= int(value) < 2**64:
            raise ValueError(f"{name} must be in [0, 2**64), got {value}")
        return int(value), int(value)
    if key == "dtype":
        dtype = float_dtype(value, name).name
        return dtype, dtype
    if key == "backend":
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
        if value not in ("auto", *BACKENDS):
            raise ValueError(f"{name} must be one of auto, {', '.join(BACKENDS)}; got {value!r}")
        return value, value
    if key == "gradients":
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return bool(value), bool(value)
    if key in ("hist_range", "grad_range"):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError(f"{name} must be a pair (low, high), got {value!r}")
        low, high = real(value[0], f"{name}[0]"), real(value[1], f"{name}[1]")
        if not low < high:
            raise ValueError(f"{name} must have low < high, got ({low}, {high})")
        return [low, high], f"({low:g}, {high:g})"
    if key in ("sigma_w",):
        s = real(value, name, low=0.0, strict=True)
        return s, s
    if key in ("sigma_b",):
        s = real(value, name, low=0.0)
        return s, s
    if key == "bias":
        return _per_layer(value, name, _bias)
    if key == "init":
        return _per_layer(value, name, _init_token)
    if key == "activation":
        return _per_layer(value, name, _activation_token)
    raise AssertionError(key)  # pragma: no cover - keys are checked before


def sigma_w_scheme(sigma_w: float, init: Any, name: str) -> Scheme:
    """The scheme of weights with variance ``sigma_w**2 / fan_in``, shaped like ``init``.

    A zero-mean normal scheme gives N(0, σ_w²/fan_in); a zero-mean uniform one gives
    U(-l, l) with the same variance; Keras's truncated normals keep their truncation.  Other
    schemes (a non-zero mean, constants, orthogonal, identity, sparse, callables) have no
    variance to set, and a list of inits per layer is ambiguous: both raise ValueError.
    """
    if isinstance(init, list):
        raise ValueError(f"sigma_w cannot be combined with a list of inits per layer ({name})")
    resolved = scheme(init)
    if isinstance(resolved, variance_scaling):
        kind = resolved.distribution_name
        if kind == "truncated_normal":
            return variance_scaling(sigma_w**2, "fan_in", "truncated_normal")
    dist = resolved.distribution(4, 4)
    if dist is not None and dist.kind == "normal" and dist.a == 0.0:
        return variance_scaling(sigma_w**2, "fan_in", "untruncated_normal")
    if dist is not None and dist.kind == "uniform" and dist.a == -dist.b:
        return variance_scaling(sigma_w**2, "fan_in", "uniform")
    raise ValueError(
        f"sigma_w sets the variance of zero-mean normal or uniform weights, but {name} is "
        f"{resolved!r}: drop sigma_w, or use init='normal' or 'uniform' with it"
    )


@dataclass(frozen=True)
class Config:
    """One configuration of a sweep: what to run and what to show."""

    index: int  # position in the grid's cartesian product
    config_id: str
    columns: dict[str, Any]  # the configuration's columns, as the tables show them
    kwargs: dict[str, Any]  # the propagate keywords (seed excluded)
    seeds: tuple[int, ...]  # one per repeat
    #: Equal for configurations that are the same run but for their seeds (the same grid
    #: entries but for ``seed``'s): they share one plan.
    run_key: tuple[int, ...] = ()


def _digest(payload: Any, size: int = 8) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _config_id(hashed: dict[str, Any]) -> str:
    """The ``config_id`` of a configuration with normalised parameters ``hashed``."""
    return _digest({"format": FORMAT_VERSION, "run": hashed})


def repeat_seed(seed: int, config_id: str, repeat: int) -> int:
    """The seed of repeat ``repeat`` of configuration ``config_id`` in a sweep of ``seed``:
    a hash, so it depends on nothing else (machine, executor, workers, order)."""
    text = f"initscope-sweep/{FORMAT_VERSION}/{seed}/{config_id}/{repeat}".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def check_tables(grid: Any, fixed: Any) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``grid`` and ``fixed`` checked for shape: known string keys, non-empty lists."""
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a mapping of parameter names to lists, got {grid!r}")
    if fixed is None:
        fixed = {}
    if not isinstance(fixed, Mapping):
        raise TypeError(f"fixed must be a mapping of parameter names to values, got {fixed!r}")
    for source, table in (("grid", grid), ("fixed", fixed)):
        for key in table:
            if not isinstance(key, str):
                raise TypeError(f"{source} keys must be parameter names, got {key!r}")
            if key in _REFUSED:
                raise ValueError(f"{_where(source, key)} cannot be swept: {_REFUSED[key]}")
            if key not in KEYS:
                raise ValueError(
                    f"{_where(source, key)} is not a parameter of a sweep; "
                    f"valid ones are {', '.join(KEYS)}"
                )
    both = sorted(set(grid) & set(fixed))
    if both:
        raise ValueError(f"grid and fixed both set {', '.join(map(repr, both))}: keep one")
    lists: dict[str, list[Any]] = {}
    for key, values in grid.items():
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(
            values, Sequence | np.ndarray
        ):
            raise TypeError(f"{_where('grid', key)} must be a list of values, got {values!r}")
        if len(values) == 0:
            raise ValueError(f"{_where('grid', key)} is an empty list: give at least one value")
        lists[key] = list(values)
    return lists, dict(fixed)


def _combine(keys: set[str], source: dict[str, str]) -> None:
    """Reject keys that say the same thing twice."""
    pairs = (("width", "widths"), ("depth", "widths"), ("sigma_b", "bias"))
    for a, b in pairs:
        if a in keys and b in keys:
            raise ValueError(
                f"{_where(source[a], a)} and {_where(source[b], b)} contradict each other: "
                f"{a} is a shorthand for {b}, give one of them"
            )
    if ("width" in keys) != ("depth" in keys) and "widths" not in keys:
        given, missing = ("width", "depth") if "width" in keys else ("depth", "width")
        raise ValueError(f"{_where(source[given], given)} needs {missing!r} too (or use widths)")
    if not keys & {"widths", "width"}:
        raise ValueError("a sweep needs the network's layers: set widths, or width and depth")


def expand(
    grid: Any, fixed: Any, *, repeats: int, seed: int, max_configs: int | None
) -> tuple[list[Config], dict[str, Any]]:
    """Every configuration of the cartesian product of ``grid``, with ``fixed``.

    Returns the configurations in the grid's order and the sweep's identity (a JSON
    dict naming exactly this sweep; see :func:`sweep_id`).
    """
    lists, constants = check_tables(grid, fixed)
    source = {k: "grid" for k in lists} | {k: "fixed" for k in constants}
    _combine(set(source), source)
    if "seed" in source and repeats != 1:
        raise ValueError(
            f"repeats must be 1 when {_where(source['seed'], 'seed')} sets the seeds, got {repeats}"
        )
    count = math.prod(len(v) for v in lists.values())
    if max_configs is not None and count > max_configs:
        raise ValueError(
            f"grid has {count:,} configurations, more than max_configs = {max_configs:,}: "
            f"shrink the grid or raise max_configs"
        )
    normal_lists = {
        k: _one_column_type([normalise(k, v, f"grid[{k!r}][{i}]") for i, v in enumerate(vals)])
        for k, vals in lists.items()
    }
    normal_fixed = {k: normalise(k, v, _where("fixed", k)) for k, v in constants.items()}
    # sigma_w meets init per configuration; check every pair once, up front
    if "sigma_w" in source:
        raw_inits = lists.get("init") or [constants.get("init", _DEFAULTS["init"])]
        name = _where(source.get("init", "fixed"), "init") if "init" in source else "init"
        for raw in raw_inits:
            sigma_w_scheme(1.0, raw, name)

    keys = list(lists)
    configs: list[Config] = []
    # configurations that differ in their seed alone differ in nothing else: the first of
    # them is built in full, the others from it
    first: dict[tuple[int, ...], tuple[Config, dict[str, Any]]] = {}
    seed_at = keys.index("seed") if "seed" in lists else None
    for index, combo in enumerate(itertools.product(*(range(len(lists[k])) for k in keys))):
        run_key = tuple(i for k, i in zip(keys, combo, strict=True) if k != "seed")
        if seed_at is not None and run_key in first:
            token, column = normal_lists["seed"][combo[seed_at]]
            configs.append(_reseeded(*first[run_key], index, token, column))
            continue
        chosen = {k: (normal_lists[k][i], lists[k][i]) for k, i in zip(keys, combo, strict=True)}
        chosen |= {k: (normal_fixed[k], constants[k]) for k in constants}
        first[run_key] = _config(index, chosen, repeats, seed, run_key)
        configs.append(first[run_key][0])
    _check_distinct(configs, keys, lists)
    identity = {
        "format": FORMAT_VERSION,
        "grid": {k: [t for t, _ in v] for k, v in normal_lists.items()},
        "fixed": {k: t for k, (t, _) in normal_fixed.items() if k not in _UNHASHED},
        "repeats": repeats,
        "seed": seed,
    }
    return configs, identity


def _one_column_type(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """``(token, column)`` pairs of one grid key, their columns all text where some are (a
    per-layer list among scalars): a column has one type, in memory as in Parquet."""
    text = [isinstance(column, str) for _, column in pairs]
    if any(text) and not all(text):
        return [(token, c if isinstance(c, str) else json.dumps(c)) for token, c in pairs]
    return pairs


def _check_distinct(configs: list[Config], keys: list[str], lists: dict[str, list]) -> None:
    """Two grid points that describe the same run (same ``config_id``) would be computed twice
    and stored once: refuse them, naming both."""
    first: dict[str, Config] = {}
    for config in configs:
        other = first.setdefault(config.config_id, config)
        if other is not config:
            differ = [k for k in keys if other.columns.get(k) != config.columns.get(k)]
            where = ", ".join(f"{k}={other.columns[k]!r} and {config.columns[k]!r}" for k in differ)
            raise ValueError(
                f"grid: {where or 'two entries'} describe the same run (the same network, "
                f"init and statistics): remove one of them"
            )


@functools.cache
def _default_activation() -> Any:
    return normalise("activation", _DEFAULTS["activation"], "activation")[0]


def _config(
    index: int,
    chosen: dict[str, tuple[tuple[Any, Any], Any]],
    repeats: int,
    seed: int,
    run_key: tuple[int, ...],
) -> tuple[Config, dict[str, Any]]:
    """The configuration of the grid entries ``chosen``, and the normalised parameters its
    ``config_id`` hashes."""
    tokens = {k: tc[0] for k, (tc, _) in chosen.items()}
    columns = {k: tc[1] for k, (tc, _) in chosen.items()}
    raw = {k: v for k, (_, v) in chosen.items()}
    kwargs: dict[str, Any] = {}
    if "widths" in tokens:
        kwargs["widths"] = tokens["widths"]
    else:
        kwargs["widths"] = [tokens["width"]] * tokens["depth"]
    for key in ("n_samples", "input_dim", "dtype", "bins", "backend", "chunk_size"):
        if key in tokens and tokens[key] is not None:
            kwargs[key] = tokens[key]
    for key in ("gradients", "grad_bins"):
        if key in tokens:
            kwargs[key] = tokens[key]
    for key in ("hist_range", "grad_range"):
        if key in tokens:
            kwargs[key] = tuple(tokens[key])
    if "activation" in raw:
        kwargs["activation"] = raw["activation"]
    init = raw.get("init", _DEFAULTS["init"])
    if "sigma_w" in tokens:
        init = sigma_w_scheme(tokens["sigma_w"], init, "init")
    if "init" in raw or "sigma_w" in tokens:
        kwargs["init"] = init
    if "sigma_b" in tokens:
        kwargs["bias"] = tokens["sigma_b"]
    elif "bias" in tokens:
        kwargs["bias"] = tokens["bias"]

    hashed = dict(_DEFAULTS)
    hashed["init"] = tokens.get("init", _DEFAULTS["init"])
    hashed["activation"] = tokens["activation"] if "activation" in tokens else _default_activation()
    for key in ("n_samples", "input_dim", "dtype", "bins", "hist_range", "backend", "seed"):
        if key in tokens:
            hashed[key] = tokens[key]
    hashed["widths"] = kwargs["widths"]
    hashed["bias"] = tokens.get("sigma_b", tokens.get("bias", 0.0))
    if "sigma_w" in tokens:
        hashed["init"] = repr(init)
    if isinstance(hashed["bias"], list) and len(set(hashed["bias"])) == 1:
        hashed["bias"] = hashed["bias"][0]
    # the gradients' histogram changes no number of a run without gradients
    hashed["gradients"] = tokens.get("gradients", False)
    if hashed["gradients"]:
        hashed["grad_bins"] = tokens.get("grad_bins", hashed["bins"])
        hashed["grad_range"] = tokens.get("grad_range")
    config_id = _config_id(hashed)
    if "seed" in tokens:
        seeds: tuple[int, ...] = (tokens["seed"],)
    else:
        seeds = tuple(repeat_seed(seed, config_id, r) for r in range(repeats))
    return Config(index, config_id, columns, kwargs, seeds, run_key), hashed


def _reseeded(
    config: Config, hashed: dict[str, Any], index: int, token: int, column: Any
) -> Config:
    """``config`` (built by :func:`_config` from ``hashed``) with the grid's seed ``token``
    (shown as ``column``) instead of its own."""
    config_id = _config_id({**hashed, "seed": token})
    columns = {**config.columns, "seed": column}
    return Config(index, config_id, columns, config.kwargs, (token,), config.run_key)


def sweep_id(identity: dict[str, Any]) -> str:
    """The hash that names a whole sweep (grid, fixed, repeats, seed, format)."""
    return _digest(identity, size=16)


def iter_params(config: Config) -> Iterator[tuple[str, Any]]:
    """The configuration's columns, for error messages."""
    yield from config.columns.items()


def describe(config: Config) -> str:
    """``width=256, depth=10, ...``: a configuration as a user wrote it."""
    return ", ".join(f"{k}={v}" for k, v in iter_params(config))
