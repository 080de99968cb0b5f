"""The vLLM tier (scripts/test-vllm.sh): tests that need the real vLLM engine.

The engine tests run inside the vLLM virtualenv (``.venv-vllm``), in-process. The whole-stack
tests run the stack from the project's own virtualenv with only the chat worker started from
the vLLM one (its ``python =`` key), as a deployment would. ``TEXTSERVE_VLLM_PYTHON`` names
that interpreter; the tier script sets it. These tests fail, not skip, when vLLM is missing:
the tier exists to run them.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def vllm_python() -> str:
    python = os.environ.get("TEXTSERVE_VLLM_PYTHON") or str(ROOT / ".venv-vllm" / "bin" / "python")
    if not Path(python).exists():
        pytest.fail(f"no vLLM interpreter at {python}: run scripts/vllm-venv.sh first")
    return python


@pytest.fixture(scope="session")
def vllm_interpreter() -> str:
    python = vllm_python()
    probe = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"],
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.fail(f"{python} cannot import vllm: {probe.stderr[-2000:]}")
    return python


@pytest.fixture(scope="session")
def in_vllm_venv() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.fail(f"{sys.executable} has no vLLM: run this file with the vLLM venv's python")


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, str]:
    from tests.stack import build_models
    return build_models()
