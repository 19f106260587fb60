"""Differential fuzzing: random networks and inputs, every fast backend against the reference.

Runs 500 examples under the default ``ci`` profile and 5000 under
``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import initscope
from compare import assert_matches
from initscope.activations import ACTIVATIONS

SCHEMES = ["xavier", "small", "big", "zeros", "glorot_uniform", "he_normal", "lecun_uniform"]
for extra in ("orthogonal", "sparse", "truncated_normal", "identity"):
    if extra in initscope.schemes.SCHEMES:
        SCHEMES.append(extra)


@st.composite
def user_inputs(draw, dtype: str):
    """None (generated inputs), or an array with zeros, NaN and extreme values mixed in."""
    if draw(st.booleans()):
        return None
    n = draw(st.integers(1, 200))
    dim = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal((n, dim))
    extreme = 1e15 if dtype == "float32" else 1e100
    for value, fraction in (
        (0.0, draw(st.sampled_from([0.0, 0.5, 1.0]))),
        (extreme, draw(st.sampled_from([0.0, 0.01]))),
        (np.nan, draw(st.sampled_from([0.0, 0.0, 0.005]))),
    ):
        x[rng.random(x.shape) < fraction] = value
    return x


@settings(max_examples=settings.default.max_examples * 5)
@given(data=st.data())
def test_fast_backends_match_the_reference(fast_backend, data):
    dtype = data.draw(st.sampled_from(["float64", "float32"]))
    inputs = data.draw(user_inputs(dtype))
    depth = data.draw(st.integers(1, 5))
    widths = data.draw(st.lists(st.integers(1, 300), min_size=depth, max_size=depth))
    kwargs = dict(
        init=data.draw(st.lists(st.sampled_from(SCHEMES), min_size=depth, max_size=depth)),
        activation=data.draw(st.sampled_from(ACTIVATIONS)),
        dtype=dtype,
        bias=data.draw(st.sampled_from([0.0, 0.0, 0.1, 1.0])),
        seed=data.draw(st.integers(0, 2**64 - 1)),
        inputs=inputs,
        n_samples=data.draw(st.integers(1, 200)),
        bins=data.draw(st.integers(1, 40)),
    )
    n = kwargs["n_samples"] if inputs is None else inputs.shape[0]
    reference = initscope.propagate(widths, backend="numpy", **kwargs)
    result = initscope.propagate(
        widths,
        backend=fast_backend,
        chunk_size=data.draw(st.integers(1, n)),
        threads=data.draw(st.integers(1, 4)),
        **kwargs,
    )
    assert_matches(result, reference, dtype)
