"""Comparing a result with the reference's, with dtype-aware tolerances."""

from __future__ import annotations

import numpy as np

MOMENTS = ("mean", "std", "pre_mean", "pre_std", "channel_sq_mean", "channel_var", "min", "max")
COUNTS = ("below", "above", "nonfinite", "pre_nonfinite")


def assert_matches(result, reference, dtype="float64"):
    """float64: rtol 1e-10; float32: 1e-4 (relative to each layer's spread for the means)."""
    rtol = 1e-10 if dtype == "float64" else 1e-4
    for name in MOMENTS:
        scale = np.maximum(reference.std, reference.pre_std)
        atol = rtol * np.nan_to_num(scale)
        np.testing.assert_allclose(
            getattr(result, name), getattr(reference, name), rtol=rtol, atol=atol, err_msg=name
        )
    total = reference.n_samples * np.asarray(reference.widths)
    slack = 0 if dtype == "float64" else np.maximum(3, total // 20_000)
    for name in COUNTS:
        np.testing.assert_allclose(getattr(result, name), getattr(reference, name), atol=slack)
    assert np.all(
        np.abs(result.hist - reference.hist).sum(axis=1) <= 2 * slack + (dtype == "float64") * 2
    )
    for name in ("zero_fraction", "saturated_fraction"):
        np.testing.assert_allclose(
            getattr(result, name), getattr(reference, name), atol=slack / total + 1e-12
        )
