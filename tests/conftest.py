"""Shared fixtures."""

from __future__ import annotations

import pytest

from tests.stack import build_models


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, str]:
    """Paths of the offline tiny chat and tool models, built once into the cache shared by
    every test run on this machine (env TEXTSERVE_TEST_MODELS)."""
    return build_models()
