"""Shared fixtures."""

from __future__ import annotations

import pytest

from workers.builtin_models import resolve_model


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, str]:
    """Paths of the offline tiny chat and tool models, built once into a cache shared by
    every test run on this machine."""
    cache = "/tmp/textserve-test-models"
    return {"chat": resolve_model("builtin:tiny-chat", cache),
            "tool": resolve_model("builtin:tiny-tool", cache)}
