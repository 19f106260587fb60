"""Comparing a result with the reference's, with dtype-aware tolerances."""

from __future__ import annotations

import numpy as np

MOMENTS = ("mean", "std", "pre_mean", "pre_std", "channel_sq_mean", "channel_var", "min", "max")
COUNTS = ("below", "above", "nonfinite", "pre_nonfinite")


def assert_matches(result, reference, dtype="float64", chaotic=False):
    """float64: rtol 1e-10; float32: 1e-4, per layer.

    Means and stds are compared relative to the layer's spread and its mean (a constant
    layer has std 0 in one backend and a rounding residue in another), or to its and its
    input's finite range where non-finite entries leave the moments NaN.  ``chaotic``
    networks (big tanh init in float32) amplify rounding: their counts may differ by 0.5 %.
    """
    eps = 1e-10 if dtype == "float64" else 1e-4
    total = reference.n_samples * np.asarray(reference.widths)
    tiny = float(np.finfo(dtype).tiny)  # subnormal results may differ
    for i in range(len(reference.widths)):
        scale = np.nan_to_num(
            max(reference.std[i], reference.pre_std[i], abs(reference.mean[i]),
                abs(reference.pre_mean[i]))
        )  # fmt: skip
        if scale == 0:
            # moments are NaN where a layer has non-finite entries: the finite range of the
            # layer and of its input, whose rounding errors it carries
            layers = [i - 1, i] if i > 0 else [i]
            scale = np.nan_to_num(
                max(max(abs(reference.min[j]), abs(reference.max[j])) for j in layers)
            )
        for name in MOMENTS:
            got, want = getattr(result, name)[i], getattr(reference, name)[i]
            # min and max are single entries, not averages: in float32 their rounding
            # differences compound over the layers unsmoothed
            rtol = 5 * eps if name in ("min", "max") and dtype == "float32" else eps
            np.testing.assert_allclose(
                got, want, rtol=rtol, atol=float(eps * scale) + tiny, err_msg=f"{name}[{i}]"
            )
        if chaotic:
            slack = int(total[i] // 200)
        elif dtype == "float64":
            slack = 2
        else:
            slack = int(max(3, total[i] // 20_000))
        for name in COUNTS:
            got, want = getattr(result, name)[i], getattr(reference, name)[i]
            assert abs(int(got) - int(want)) <= slack, f"{name}[{i}]: {got} != {want}"
        diff = int(np.abs(result.hist[i] - reference.hist[i]).sum())
        assert diff <= 2 * slack, f"hist[{i}] differs by {diff} counts"
        for name in ("zero_fraction", "saturated_fraction"):
            got, want = getattr(result, name)[i], getattr(reference, name)[i]
            if np.isnan(want):
                assert np.isnan(got), name
            else:
                assert abs(got - want) <= slack / total[i] + 1e-12, f"{name}[{i}]"
