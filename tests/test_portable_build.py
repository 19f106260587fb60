"""The build of initscope._core: portable, with its hot code compiled for several instruction
sets and chosen at run time, every build giving the same bits.

The default build compiles the whole layer loop (generator, activations, statistics) once
per x86-64 level (v2, v3 with AVX2 and FMA, v4 with AVX-512) and runs the widest this CPU
has; everything else is compiled for the baseline (x86-64-v2). These tests check that the
builds this CPU runs agree bit for bit, that no instruction above the baseline appears
outside the dispatched code (by disassembly), and, where qemu-user is installed, that the
module runs on CPUs without AVX2 and without AVX-512.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import initscope.plan
import initscope.random as spec
from initscope.activations import ACTIVATIONS, activation
from initscope.backends import cpp
from initscope.plan import make_plan

try:
    cpp.check_available()
    from initscope import _core
except ImportError as exc:  # pragma: no cover - only without the extension
    pytest.skip(f"initscope._core unavailable: {exc}", allow_module_level=True)

BUILD = _core.build_info()
SUPPORTED = BUILD["supported_isas"]
DISPATCHED = [isa for isa in BUILD["compiled_isas"] if isa in ("v3", "v4")]


def test_build_reports_blas_flags_and_isa():
    info = _core.blas_info()
    assert "OpenBLAS" in info["openblas_config"]
    assert info["openblas_corename"]
    assert "-ffp-contract=off" in BUILD["cxx_flags"]
    assert BUILD["version"] == _core.__version__ == initscope.__version__
    assert BUILD["isa"] in SUPPORTED
    assert set(SUPPORTED) <= set(BUILD["compiled_isas"])
    # the widest build this CPU runs, unless the environment asks for another
    if not os.environ.get("INITSCOPE_ISA"):
        assert BUILD["isa"] == SUPPORTED[-1]


def test_kernel_constants_have_one_source():
    assert initscope.plan.TILE_ROWS == _core.TILE_ROWS == 240
    assert _core.HIST_COPIES > 0 and _core.SEGMENT > 0 and _core.WEIGHT_CACHE_BYTES > 0


def test_an_unknown_or_unsupported_isa_is_a_value_error():
    with pytest.raises(ValueError, match="no build v9"):
        _core.testing.set_isa("v9")
    missing = [isa for isa in BUILD["compiled_isas"] if isa not in SUPPORTED]
    if missing:
        with pytest.raises(ValueError, match="this CPU cannot run"):
            _core.testing.set_isa(missing[0])
    assert _core.build_info()["isa"] == BUILD["isa"]


@pytest.fixture
def each_isa():
    """Calls f() under every build this CPU runs; restores the build in use."""

    def run(f):
        results = {}
        try:
            for isa in SUPPORTED:
                _core.testing.set_isa(isa)
                assert _core.build_info()["isa"] == isa
                results[isa] = f()
        finally:
            _core.testing.set_isa(BUILD["isa"])
        return results

    return run


def _bytes(value) -> bytes:
    if isinstance(value, list):
        return b"|".join(_bytes(v) for v in value)
    return np.ascontiguousarray(value).tobytes()


FIELDS = (
    "unit_mean", "unit_m2", "pre_unit_mean", "pre_unit_m2", "min", "max", "hist", "below",
    "above", "zeros", "saturated", "nonfinite", "pre_nonfinite", "activations",
)  # fmt: skip


@pytest.mark.skipif(len(SUPPORTED) < 2, reason="this CPU runs one build only")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    ("init", "activation"),
    [
        ("xavier", list(ACTIVATIONS)[:6]),
        ("he_uniform", list(ACTIVATIONS)[5:]),
        ("orthogonal", "gelu_tanh"),
    ],
)
def test_every_build_gives_the_same_bits(each_isa, dtype, init, activation):
    depth = len(activation) if isinstance(activation, list) else 3
    plan = make_plan(
        [67, 130, 33, 67, 130, 33][:depth], init=init, activation=activation, n_samples=611,
        input_dim=35, bias=0.1, dtype=dtype, hist_range=(-0.9, 0.7), threads=2, chunk_size=240,
        keep_activations=True, seed=11,
    )  # fmt: skip
    results = each_isa(lambda: cpp.run(plan))
    first = results[SUPPORTED[0]]
    for isa, raw in results.items():
        for name in FIELDS:
            assert _bytes(getattr(raw, name)) == _bytes(getattr(first, name)), (isa, name)


@pytest.mark.skipif(len(SUPPORTED) < 2, reason="this CPU runs one build only")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_build_draws_and_activates_the_same_bits(each_isa, dtype):
    x = np.concatenate(
        [np.linspace(-40, 40, 4001), np.geomspace(1e-30, 800, 500), -np.geomspace(1e-30, 800, 500)]
    ).astype(dtype)

    def sample():
        draws = [
            _core.testing.normal(7, spec.WEIGHTS, 3, 5, 10_001, dtype),
            _core.testing.uniform(7, spec.INPUTS, 0, 2**33 + 1, 777, dtype),
        ]
        acts = [_core.testing.activate(a.code, a.param, x) for a in map(activation, ACTIVATIONS)]
        return _bytes(draws + acts)

    results = each_isa(sample)
    assert len(set(results.values())) == 1


# Instructions above x86-64-v2: any use of the AVX registers (ymm, zmm, mask registers), any
# VEX/EVEX-encoded instruction (their mnemonics start with v, AVX-512's mask ones with k),
# and BMI1/BMI2/LZCNT/MOVBE (in x86-64-v3).
_WIDE_REGISTER = re.compile(r"%[yz]mm\d|%k[0-7]\b")
_WIDE_MNEMONIC = re.compile(
    r"^(v\w+|k(add|and|andn|mov|not|or|ortest|shiftl|shiftr|test|unpck|xnor|xor)[bwdq]"
    r"|andn|bextr|blsi|blsmsk|blsr|bzhi|mulx|pdep|pext|rorx|sarx|shlx|shrx|lzcnt|tzcnt|movbe)$"
)
_PREFIXES = {"rep", "repz", "repnz", "lock", "notrack", "bnd", "data16", "cs", "ds"}
_FUNCTION = re.compile(r"^([0-9a-f]+) <(.*)>:$")
_REFERENCE = re.compile(r"\b([0-9a-f]+) <([^>+]+)>")


def _functions(library: str) -> dict[int, dict]:
    """Per function (by address) of `objdump -d`: name, wide instructions, code it refers to."""
    text = subprocess.run(
        ["objdump", "-d", "--no-show-raw-insn", library], capture_output=True, text=True, check=True
    ).stdout
    functions: dict[int, dict] = {}
    current = None
    for line in text.splitlines():
        if m := _FUNCTION.match(line):
            current = {"name": m.group(2), "wide": [], "refs": set()}
            functions[int(m.group(1), 16)] = current
            continue
        fields = line.split("\t")
        if current is None or len(fields) < 2:
            continue
        instruction = fields[1].strip()
        words = [w for w in instruction.split() if w not in _PREFIXES]
        if not words:
            continue
        if _WIDE_REGISTER.search(instruction) or _WIDE_MNEMONIC.match(words[0]):
            current["wide"].append(instruction)
        current["refs"].update(int(m.group(1), 16) for m in _REFERENCE.finditer(instruction))
    return functions


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is missing")
@pytest.mark.skipif(not DISPATCHED, reason="no dispatched build (INITSCOPE_NATIVE or not x86-64)")
def test_wide_instructions_only_in_dispatched_code():
    """Code above the baseline lies in the dispatched builds (namespaces initscope::isa_v3,
    isa_v4), or in functions reached only from them (a library template the compiler cloned
    for one build, say); anything else would be called on a CPU without AVX."""
    functions = _functions(_core.__file__)
    assert len(functions) > 100, "the module has no symbol table: was it stripped?"
    callers = collections.defaultdict(set)
    for address, f in functions.items():
        for target in f["refs"] - {address}:
            callers[target].add(address)
    dispatched = {a for a, f in functions.items() if re.search(r"isa_v[34]", f["name"])}
    assert dispatched, "no function of the dispatched builds found"
    reached_from_dispatched = set(dispatched)
    grown = True
    while grown:
        grown = False
        for address in functions.keys() - reached_from_dispatched:
            if callers[address] and callers[address] <= reached_from_dispatched:
                reached_from_dispatched.add(address)
                grown = True
    wide = {a for a, f in functions.items() if f["wide"]}
    assert wide & dispatched, "the dispatched builds use no wide instruction: -march missing?"
    outside = {
        functions[a]["name"]: functions[a]["wide"][:3] for a in wide - reached_from_dispatched
    }
    assert not outside, f"instructions above x86-64-v2 outside the dispatched builds: {outside}"


SMOKE = textwrap.dedent(
    """
    import initscope
    from initscope.backends.cpp import _load
    _core = _load()  # OpenBLAS first, then the extension
    r = initscope.propagate([300, 300], n_samples=500, dtype="float32", backend="cpp", threads=2)
    assert r.std.shape == (2,) and 0 < r.std[-1] < 1, r.std
    print(_core.build_info()["isa"])
    """
)

# qemu's CPU models and the build each must run: Nehalem has SSE4.2 and POPCNT but no AVX,
# Haswell has AVX2 and FMA but no AVX-512.
QEMU_MODELS = {"Nehalem": "v2", "Haswell": "v3"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="qemu-user is not installed")
@pytest.mark.skipif(
    "-fsanitize" in BUILD["cxx_flags"],
    reason="a sanitized build needs its runtime preloaded, which qemu-user cannot host",
)
@pytest.mark.skipif(not DISPATCHED, reason="no dispatched build (INITSCOPE_NATIVE or not x86-64)")
@pytest.mark.parametrize(("model", "isa"), QEMU_MODELS.items())
def test_runs_on_older_cpus_under_qemu(model, isa):
    """The module runs, and picks the build it should, on an emulated CPU without AVX-512
    (Haswell) and without AVX (Nehalem); NumPy and OpenBLAS (DYNAMIC_ARCH) adapt too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "INITSCOPE_"))}
    done = subprocess.run(
        ["qemu-x86_64", "-cpu", model, sys.executable, "-c", SMOKE],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == isa
