"""Shared fixtures: every numerical test runs on every backend that is available here."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

import initscope

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "quick",
    max_examples=100,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = initscope.available_backends()
COMPILED = [b for b in BACKENDS if b != "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each available backend, the NumPy reference included."""
    return request.param


@pytest.fixture(
    params=COMPILED or [pytest.param("none", marks=pytest.mark.skip("no fast backend"))]
)
def fast_backend(request: pytest.FixtureRequest) -> str:
    """Each available backend other than the reference, to test against it."""
    return request.param
