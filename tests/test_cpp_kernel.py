"""initscope._core's typed boundary (LayerSpec in, RawStats out) and the checks the kernel
makes itself, for callers that bypass make_plan."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import initscope
from initscope.backends import cpp
from initscope.plan import WIDE_TILES, WIDE_WEIGHTS, chunk_multiple, make_plan
from initscope.result import GradRaw, RawStats

try:
    cpp.check_available()
    from initscope import _core
except ImportError as exc:  # pragma: no cover - only without the extension
    pytest.skip(f"initscope._core unavailable: {exc}", allow_module_level=True)


def _args(plan, **changes):
    args = {
        "n_samples": plan.n_samples, "input_dim": plan.input_dim, "seeds": [plan.seed],
        "dtype": plan.dtype.name, "inputs": plan.inputs, "layers": cpp._layer_specs(plan),
        "bins": plan.bins, "hist_low": -1.0, "hist_high": 1.0, "threads": 1,
        "chunk_size": plan.chunk_size, "keep_activations": False,
    }  # fmt: skip
    return {**args, **changes}


def test_a_misspelt_field_is_an_error():
    with pytest.raises(TypeError):
        _core.LayerSpec(fan_in=3, fan_out=4, bias_sd=0.1)  # type: ignore[call-arg]
    layer = _core.LayerSpec(fan_in=3, fan_out=4)
    with pytest.raises(AttributeError):
        layer.bias_sd = 0.1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        layer.source = "normal"  # type: ignore[assignment]
    (raw,) = _core.propagate(**_args(make_plan([4], input_dim=3, n_samples=5)))
    with pytest.raises(AttributeError):
        raw.hist = np.zeros((1, 30), np.int64)  # type: ignore[misc]


def _bytes(value) -> bytes:
    if isinstance(value, list):
        return b"|".join(_bytes(v) for v in value)
    return np.ascontiguousarray(value).tobytes()


def _assert_same_fields(raw, core, kind) -> None:
    for field in dataclasses.fields(kind):
        got, expected = getattr(raw, field.name), getattr(core, field.name)
        if field.name == "grads" and got is not None:
            _assert_same_fields(got, expected, GradRaw)
        else:
            assert _bytes(got) == _bytes(expected), field.name


@pytest.mark.parametrize("gradients", [False, True])
def test_the_result_fills_every_field_of_raw_stats(gradients):
    plan = make_plan([4, 5], input_dim=3, n_samples=7, keep_activations=True, gradients=gradients)
    raw = cpp.run(plan)
    assert isinstance(raw, RawStats)
    (core,) = _core.propagate(
        **_args(plan, keep_activations=True, gradients=gradients, grad_bins=plan.grad_bins)
    )
    assert (core.grads is not None) == gradients
    _assert_same_fields(raw, core, RawStats)
    assert [a.shape for a in raw.activations or []] == [(7, 4), (7, 5)]


@pytest.mark.parametrize("gradients", [False, True])
def test_one_call_with_several_seeds_gives_each_seed_own_run(gradients):
    """The arguments are converted once and each seed runs as if alone: the same bits as
    one call per seed, every run with its own kept activations, a repeated seed repeating
    its run and a different seed drawing other numbers."""
    plan = make_plan([6, 5], input_dim=4, n_samples=9, bias=0.3, gradients=gradients)
    args = _args(plan, keep_activations=True, gradients=gradients, grad_bins=plan.grad_bins)
    runs = _core.propagate(**{**args, "seeds": [3, 11, 3]})
    assert len(runs) == 3
    for seed, run in zip([3, 11, 3], runs, strict=True):
        (alone,) = _core.propagate(**{**args, "seeds": [seed]})
        _assert_same_fields(run, alone, RawStats)
    assert runs[0].activations[0] is not runs[2].activations[0]
    assert not np.array_equal(runs[0].activations[0], runs[1].activations[0])
    assert _core.propagate(**{**args, "seeds": []}) == []
    # the backend's run_seeds: the same runs as run() with each seed
    for seed, raw in zip([3, 11], cpp.run_seeds(plan, [3, 11]), strict=True):
        _assert_same_fields(raw, cpp.run(dataclasses.replace(plan, seed=seed)), RawStats)


def test_drawn_weights_follow_the_distribution_affine_form():
    plan = make_plan([6], init="he_uniform", input_dim=4, n_samples=3)
    (spec,) = cpp._layer_specs(plan)
    dist = plan.layers[0].distribution
    assert dist is not None
    assert spec.source == _core.WeightSource.uniform
    assert (spec.scale, spec.shift) == dist.affine()
    assert spec.weights is None


def test_given_weights_must_have_the_layer_shape():
    plan = make_plan([4], init="orthogonal", input_dim=3, n_samples=5)
    (spec,) = cpp._layer_specs(plan)
    assert spec.source == _core.WeightSource.given and spec.weights.shape == (3, 4)
    spec.weights = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"layer 0: weights must be an array of shape"):
        _core.propagate(**_args(plan, layers=[spec]))
    spec.weights = None
    with pytest.raises(ValueError, match="layer 0: source given needs weights"):
        _core.propagate(**_args(plan, layers=[spec]))


@pytest.mark.parametrize("chunk_size", [1, 239, 241, 479])
def test_the_kernel_checks_chunks_hold_whole_tiles(chunk_size):
    plan = make_plan([3], input_dim=2, n_samples=500)
    with pytest.raises(ValueError, match=r"chunk_size must be a multiple of TILE_ROWS \(240\)"):
        _core.propagate(**_args(plan, chunk_size=chunk_size))


def test_chunks_hold_whole_groups_of_tiles_where_a_layer_is_wide():
    # 2048 * 4096 = 2**23 weights: four tiles per GEMM call, so chunks of 4 * 240 rows.
    assert (_core.WIDE_TILES, _core.WIDE_WEIGHTS) == (WIDE_TILES, WIDE_WEIGHTS) == (4, 2**23)
    assert chunk_multiple((2048, 4095)) == 240 and chunk_multiple((500, 2048, 4096)) == 960
    plan = make_plan([4096], input_dim=2048, n_samples=3000, chunk_size=241)
    assert plan.chunk_size == 960
    assert make_plan([4096], input_dim=2048, n_samples=500, chunk_size=241).chunk_size == 500
    with pytest.raises(ValueError, match=r"multiple of TILE_ROWS \* WIDE_TILES \(960, the"):
        _core.propagate(**_args(plan, chunk_size=480))


@pytest.mark.parametrize("chunk_size", [240, 480, 500, 10**6])
def test_chunks_of_whole_tiles_give_the_same_bits(chunk_size):
    plan = make_plan([70, 9], input_dim=5, n_samples=500, dtype="float32", bias=0.2)
    (whole,) = _core.propagate(**_args(plan, chunk_size=500))
    (raw,) = _core.propagate(**_args(plan, chunk_size=chunk_size, threads=2))
    for field in dataclasses.fields(RawStats):
        assert _bytes(getattr(raw, field.name)) == _bytes(getattr(whole, field.name)), field.name


@pytest.mark.parametrize(
    ("width", "split", "n_samples"), [(2048, 1000, 500), (3000, 1496, 500), (600, 250, 100)]
)
def test_a_layer_in_column_blocks_is_its_columns_run_alone(width, split, n_samples):
    """A layer of 2 * 1024 columns or more runs in blocks of about 1024 columns, and so does
    one with few samples (fewer than 4 tiles) in blocks of 128 columns or more (so that every
    thread has work): its per-unit statistics are exactly those of its first `split`
    columns and of the others, each run as a layer of its own, its counts their sums, min
    and max theirs; and any thread count gives the same bits."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n_samples, 30))
    w = rng.standard_normal((30, width)) / np.sqrt(30)
    common = dict(inputs=x, activation="tanh", bins=16, hist_range=(-0.8, 0.8))

    def raw(weights, threads):
        plan = make_plan([weights.shape[1]], init=lambda i, o: weights, threads=threads, **common)
        return cpp.run(plan.with_weights())

    wide = raw(w, 1)
    halves = [
        raw(np.ascontiguousarray(w[:, :split]), 1),
        raw(np.ascontiguousarray(w[:, split:]), 1),
    ]
    for name in ("unit_mean", "unit_m2", "pre_unit_mean", "pre_unit_m2"):
        joined = np.concatenate([np.asarray(getattr(h, name))[0] for h in halves])
        assert _bytes(np.asarray(getattr(wide, name))[0]) == _bytes(joined), name
    for name in ("hist", "below", "above", "zeros", "saturated", "nonfinite"):
        assert np.array_equal(getattr(wide, name), sum(getattr(h, name) for h in halves)), name
    assert wide.min[0] == min(h.min[0] for h in halves)
    assert wide.max[0] == max(h.max[0] for h in halves)
    assert wide.deriv_sq_sum[0] == pytest.approx(sum(h.deriv_sq_sum[0] for h in halves), rel=1e-13)
    # the activations themselves: tanh of the product, as NumPy computes it
    np.testing.assert_allclose(
        np.asarray(wide.unit_mean)[0], np.tanh(x @ w).mean(axis=0), atol=1e-12
    )
    for threads in (2, 3):
        _assert_same_fields(raw(w, threads), wide, RawStats)


def _stub() -> dict[str, ast.AST]:
    path = Path(cpp.__file__).parent.parent / "_core.pyi"
    return {
        target.id if isinstance(node, ast.AnnAssign) else node.name: node
        for node in ast.parse(path.read_text()).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AnnAssign))
        for target in ([node.target] if isinstance(node, ast.AnnAssign) else [node])
    }


def _members(node: ast.AST) -> set[str]:
    return {
        n.name if isinstance(n, ast.FunctionDef) else n.target.id  # type: ignore[union-attr]
        for n in node.body  # type: ignore[attr-defined]
        if isinstance(n, ast.FunctionDef | ast.AnnAssign)
        if not (isinstance(n, ast.FunctionDef) and n.name.startswith("__"))
    }


def test_the_stub_names_what_the_module_has():
    stub = _stub()
    public = {name for name in dir(_core) if not name.startswith("_")} | {"__version__"}
    assert public == set(stub) - {"_Testing"}
    testing = {name for name in dir(_core.testing) if not name.startswith("_")}
    assert testing == _members(stub["_Testing"])
    for cls in ("LayerSpec", "RawStats"):
        have = {name for name in dir(getattr(_core, cls)) if not name.startswith("_")}
        assert have == _members(stub[cls]), cls


def _gradient_args(plan, **changes):
    return _args(plan, gradients=True, grad_bins=plan.grad_bins, threads=plan.threads, **changes)


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
@pytest.mark.parametrize("chunk_size", [240, None])
def test_redrawn_weights_give_the_kept_weights_gradients(depth, chunk_size):
    """Weights that do not fit the cache are drawn again for the way back: the same bits."""
    plan = make_plan([48, 70, 33, 60, 41][:depth], input_dim=30, n_samples=700, bias=0.2,
                     chunk_size=chunk_size, threads=2, gradients=True)  # fmt: skip
    (kept,) = _core.propagate(**_gradient_args(plan))
    (redrawn,) = _core.propagate(**_gradient_args(plan, weight_cache_bytes=0))
    assert kept.grads is not None and redrawn.grads is not None
    _assert_same_fields(redrawn, kept, RawStats)
    assert np.all(np.isfinite(kept.grads.weight_grad_std))


_PEAK_SCRIPT = """
import json, sys
import initscope
from initscope.backends import cpp
from initscope.plan import make_plan

cpp.check_available()  # OpenBLAS first, then the extension
from initscope import _core

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

plan = make_plan([1000] * 3, n_samples=960, chunk_size=480, gradients=True)
specs = cpp._layer_specs(plan)
initscope.propagate([1000], n_samples=240, threads=1)  # OpenBLAS's own buffers
before = peak()
_core.propagate(n_samples=960, input_dim=1000, seeds=[0], dtype="float64", inputs=None,
                layers=specs, bins=30, hist_low=-1.0, hist_high=1.0, threads=1,
                chunk_size=480, keep_activations=False, gradients=True, grad_bins=30,
                weight_cache_bytes=0)
print(json.dumps({"peak": peak() - before, "estimate": cpp.estimate_memory(plan),
                  "weights_kept": plan.weight_bytes(_core.WEIGHT_CACHE_BYTES),
                  "weights_redrawn": plan.weight_bytes(0)}))
"""


@pytest.mark.skipif(
    "-fsanitize" in _core.build_info()["cxx_flags"],
    reason="AddressSanitizer's red zones and quarantine add to the peak",
)
def test_gradient_memory_of_redrawn_weights_within_the_estimate():
    """Peak memory of a gradient run whose weights are redrawn (two rotating buffers): within
    the estimate counted for that layout (plus the rounding of large buffers to 2 MiB huge
    pages), and most of it (the estimate is not loose)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, check=True
    )
    figures = json.loads(done.stdout)
    estimate = figures["estimate"] - figures["weights_kept"] + figures["weights_redrawn"]
    assert 0.8 * estimate <= figures["peak"] <= 1.08 * estimate, figures


def test_a_wide_layer_gives_the_activations_numpy_computes():
    # Two wide layers (four tiles per GEMM call; 1201 samples end in a short group): every
    # kept activation against np.tanh of NumPy's own product with the same weights.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1201, 2048))
    result = initscope.propagate([4096, 2048], inputs=x, backend="cpp", threads=2,
                                 keep_activations=True)  # fmt: skip
    expected = x
    for layer, fan_in, fan_out in ((0, 2048, 4096), (1, 4096, 2048)):
        expected = np.tanh(expected @ initscope.make_weights("xavier", fan_in, fan_out,
                                                             layer=layer))  # fmt: skip
        np.testing.assert_allclose(result.activations[layer], expected, rtol=0, atol=1e-12)
        assert result.std[layer] == pytest.approx(expected.std(), rel=1e-12)
