"""vLLM's own serving benchmark (``vllm bench serve --backend openai-chat``) against two OpenAI
Chat Completions servers of one model, side by side in one run:

1. ``vllm``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``), with
   the settings the stack's vllm chat worker gives its engine;
2. ``stack``: this stack's ``/v1/chat/completions`` (front -> broker -> vllm chat worker), a
   chat-only deploy started by supervisor/sandbox.py.

    python benchmarks/openai_side_by_side.py [--paths vllm,stack] [--concurrency 1 8 32]
        [--prompts-per-level 4] [--input-len 128] [--output-len 64]

Run it with the project's python; the servers' vLLM and the benchmark tool run in
``.venv-vllm`` (scripts/vllm-venv.sh). Every request is the same: the benchmark's seeded random
prompts, fixed input and output lengths (``--ignore-eos``, temperature 0), streamed. Phases run
one after another, never sharing CPUs: one server is up at a time. Prints TTFT p50/p99, ITL
mean/p50 and output tokens/s per path and concurrency, from the benchmark's saved JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from supervisor.sandbox import API_KEY, MODEL_CACHE, Stack, build_models, free_port  # noqa: E402

BENCH = ROOT / "benchmarks" / "vllm_bench_serve.py"
CHAT = "/v1/chat/completions"
PATHS = {"vllm": "vLLM OpenAI server", "stack": "this stack /v1", "ws": "this stack /ws (Yap)",
         "responses": "this stack /v1/resp"}
STACK_PATHS = ("stack", "ws", "responses")  # one stack serves them all, one after another
MAX_MODEL_LEN = 5760  # the vllm worker's default (WorkerConfig.max_model_len)


class PathFailed(RuntimeError):
    """A path could not be benchmarked; the message carries what the server answered."""


@dataclass(frozen=True)
class Settings:
    model_dir: str
    levels: list[int]
    prompts_per_level: int
    input_len: int
    output_len: int
    kv_cache_gib: float
    vllm_python: str
    result_dir: Path

    def num_prompts(self, level: int) -> int:
        return self.prompts_per_level * level


@dataclass(frozen=True)
class Endpoint:
    base_url: str  # http://host:port, no /v1
    api_key: str


# ------------------------------------------------------------------ HTTP checks


def http(method: str, url: str, api_key: str, body: dict | None = None,
         timeout: float = 60) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {api_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def served_model(endpoint: Endpoint) -> str:
    """The first id of GET /v1/models: the name requests must carry."""
    status, body = http("GET", f"{endpoint.base_url}/v1/models", endpoint.api_key)
    if status != 200:
        raise PathFailed(f"GET /v1/models -> HTTP {status}: {body.decode(errors='replace')}")
    return json.loads(body)["data"][0]["id"]


def probe(endpoint: Endpoint, model: str, max_tokens: int, deadline_s: float = 300) -> int:
    """One streamed request shaped like the benchmark's (its body fields, ``ignore_eos``):
    the full status and body when it fails, which the benchmark only reports as a reason
    phrase. Retries a 503 (workers still warming up) until the deadline. Returns the
    completion tokens the usage chunk reports."""
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}],
            "max_completion_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True, "temperature": 0.0}
    deadline = time.monotonic() + deadline_s
    while True:
        status, raw = http("POST", f"{endpoint.base_url}{CHAT}", endpoint.api_key, body)
        if status != 503 or time.monotonic() > deadline:
            break
        time.sleep(1)
    text = raw.decode(errors="replace")
    if status != 200:
        raise PathFailed(f"POST {CHAT} -> HTTP {status}: {text}")
    usage, content = None, ""
    for line in text.splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise PathFailed(f"POST {CHAT} -> HTTP 200, then a stream error: {line}")
        if chunk.get("choices"):
            content += chunk["choices"][0].get("delta", {}).get("content") or ""
        usage = chunk.get("usage") or usage
    if usage is None or not content:
        raise PathFailed(f"POST {CHAT} -> HTTP 200 without text or usage chunk: {text[:2000]}")
    return usage["completion_tokens"]


# ------------------------------------------------------------------ vllm bench serve


def bench(settings: Settings, path: str, endpoint: Endpoint, model: str, level: int) -> dict:
    """One ``vllm bench serve`` run at one concurrency; its saved result JSON."""
    name = f"{path}-c{level}"
    cmd = [settings.vllm_python, str(BENCH), "--backend", "openai-chat",
           "--base-url", endpoint.base_url, "--endpoint", CHAT,
           "--model", settings.model_dir, "--tokenizer", settings.model_dir,
           "--served-model-name", model,
           "--dataset-name", "random", "--random-input-len", str(settings.input_len),
           "--random-output-len", str(settings.output_len), "--random-range-ratio", "0",
           "--seed", "0", "--ignore-eos", "--temperature", "0",
           "--num-prompts", str(settings.num_prompts(level)), "--max-concurrency", str(level),
           "--num-warmups", "1", "--label", name, "--disable-tqdm",
           "--save-result", "--save-detailed", "--result-dir", str(settings.result_dir),
           "--result-filename", f"{name}.json"]
    log = settings.result_dir / f"{name}.log"
    env = {**os.environ, "OPENAI_API_KEY": endpoint.api_key, "HF_HUB_OFFLINE": "1"}
    with log.open("w") as out:
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                              cwd=settings.result_dir)
    output = log.read_text(errors="replace")
    if done.returncode != 0:
        raise PathFailed(f"vllm bench serve exited {done.returncode} at concurrency {level} "
                         f"(log {log}):\n{tail(output, 40)}")
    if "tokenizer mismatch" in output:  # it re-cut the prompts with the server's /tokenize
        print(f"  warning: {name}: the benchmark re-aligned its prompts to the server's "
              f"tokenizer, so the paths' prompts may differ (log {log})", flush=True)
    return json.loads((settings.result_dir / f"{name}.json").read_text())


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------ the two servers


def vllm_env(settings: Settings) -> dict[str, str]:
    """What workers/engines/vllm_args.engine_env sets for the worker's engine on a CPU."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": f"{settings.kv_cache_gib:g}",
            "OMP_WAIT_POLICY": "PASSIVE", "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1",
            "HF_HUB_OFFLINE": "1"}


@contextlib.contextmanager
def vllm_server(settings: Settings) -> Iterator[Endpoint]:
    """vLLM's own server with the engine arguments of workers/engines/vllm_args.engine_kwargs
    (enforce_eager as the stack's worker is configured here), behind the same API key."""
    port = free_port()
    cmd = [settings.vllm_python, "-m", "vllm.entrypoints.openai.api_server",
           "--model", settings.model_dir, "--tokenizer", settings.model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--api-key", API_KEY,
           "--dtype", "auto", "--max-model-len", str(MAX_MODEL_LEN),
           "--max-num-seqs", str(max(settings.levels)), "--enable-prefix-caching",
           "--enforce-eager", "--generation-config", "auto"]
    log = settings.result_dir / "vllm-server.log"
    with log.open("w") as out:
        # Its own session and cwd: the engine core it spawns goes down with it, and the
        # checkout's packages (ours is named supervisor) stay off its path.
        server = subprocess.Popen(cmd, env=vllm_env(settings), stdout=out,
                                  stderr=subprocess.STDOUT, cwd=settings.result_dir,
                                  start_new_session=True)
    endpoint = Endpoint(f"http://127.0.0.1:{port}", API_KEY)
    try:
        deadline = time.monotonic() + 600
        while not healthy(endpoint):
            if server.poll() is not None or time.monotonic() > deadline:
                raise PathFailed(f"vLLM's server did not come up (log {log}):\n"
                                 f"{tail(log.read_text(errors='replace'), 30)}")
            time.sleep(1)
        yield endpoint
    finally:
        stop_group(server)


def healthy(endpoint: Endpoint) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint.base_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def stack_server(settings: Settings) -> Iterator[Endpoint]:
    """A chat-only stack (no tool worker) with one vllm chat worker on the same model."""
    config = "\n".join([
        "[supervisor]", f'model_cache = "{MODEL_CACHE}"', "start_timeout_s = 300", "",
        "[[workers]]", 'name = "chat-0"', 'kind = "chat"', 'engine = "vllm"',
        'model = "builtin:tiny-chat"', f'python = "{settings.vllm_python}"',
        f"capacity = {max(settings.levels)}", "",
        "[workers.vllm]", "enforce_eager = true", "cache_reset_interval_s = 0",
        f"kv_cache_space_gib = {settings.kv_cache_gib}", ""])
    stack = Stack(config_text=config, env={"CHAT_MAX_OUT": str(settings.output_len),
                                           "DEPLOY_MODE": "chat"})
    try:
        stack.start()
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        stack.stop()
        raise PathFailed(f"the stack did not start: {err}\nstack logs:\n{stack.logs()}") from err
    try:
        yield Endpoint(f"http://127.0.0.1:{stack.port}", API_KEY)
    except PathFailed as err:
        raise PathFailed(f"{err}\nstack logs:\n{stack.logs()}") from err
    finally:
        stack.stop()


SERVERS = {"vllm": vllm_server, "stack": stack_server}


def run_path(settings: Settings, path: str, results: dict[str, dict[int, dict]],
             also: list[str] = (), http: bool = True) -> None:
    """Benchmarks one server at every level into ``results[path]`` (kept when a later level
    fails); ``also``: this stack's WebSocket paths, on the same stack, after it."""
    # The benchmark shares the CPUs with whatever else runs here: say how busy they were.
    print(f"== {PATHS[path]} (load average {os.getloadavg()[0]:.1f})", flush=True)
    with SERVERS[path](settings) as endpoint:
        model = served_model(endpoint)
        got = probe(endpoint, model, settings.output_len)
        if got != settings.output_len:
            print(f"  warning: asked for {settings.output_len} tokens with ignore_eos, the "
                  f"usage chunk says {got}", flush=True)
        for level in settings.levels if http else ():
            results[path][level] = bench(settings, path, endpoint, model, level)
            report_level(results[path][level], level)
        for ws_path in also:
            import asyncio

            import ws_clients
            print(f"== {PATHS[ws_path]} (load average {os.getloadavg()[0]:.1f})", flush=True)
            results[ws_path] = {}
            for level in settings.levels:
                prompts = ws_clients.random_prompts(settings.model_dir,
                                                    settings.num_prompts(level) + 1,
                                                    settings.input_len)
                asyncio.run(ws_clients.run(ws_path, endpoint.base_url, endpoint.api_key,
                                           prompts[:1], 1, settings.output_len))  # warm-up
                results[ws_path][level] = asyncio.run(ws_clients.run(
                    ws_path, endpoint.base_url, endpoint.api_key, prompts[1:], level,
                    settings.output_len))
                report_level(results[ws_path][level], level)


def report_level(result: dict, level: int) -> None:
    print(f"  concurrency {level}: {result['completed']} ok, {result['failed']} failed (load "
          f"average {os.getloadavg()[0]:.1f})", flush=True)


# ------------------------------------------------------------------ the table


def table(settings: Settings, results: dict[str, dict[int, dict]]) -> str:
    lines = [f"builtin:tiny-chat, random prompts {settings.input_len} tokens in / "
             f"{settings.output_len} out (ignore_eos, temperature 0), "
             f"{settings.prompts_per_level} x concurrency prompts per level, "
             f"{os.cpu_count()} CPUs; HTTP paths: vllm bench serve --backend openai-chat; "
             f"/ws and /v1/resp(onses): benchmarks/ws_clients.py, the same requests",
             f"{'path':<20} {'conc':>4} {'ok/n':>7} {'in/req':>6} {'out/req':>7} "
             f"{'TTFT p50':>9} {'TTFT p99':>9} {'ITL mean':>9} {'ITL p50':>8} {'out tok/s':>9}"]
    for level in settings.levels:
        for path, by_level in results.items():
            r = by_level.get(level)
            if r is None:
                continue
            ok = max(r["completed"], 1)
            lines.append(
                f"{PATHS[path]:<20} {level:>4} {r['completed']:>3}/{r['num_prompts']:<3} "
                f"{r['total_input_tokens'] / ok:>6.0f} {r['total_output_tokens'] / ok:>7.0f} "
                f"{r['median_ttft_ms']:>9.1f} {r['p99_ttft_ms']:>9.1f} "
                f"{r['mean_itl_ms']:>9.2f} {r['median_itl_ms']:>8.2f} "
                f"{r['output_throughput']:>9.0f}")
    lines.append("times in ms; in/req and out/req: mean tokens per completed request as the "
                 "server's usage reports them")
    return "\n".join(lines)


def first_errors(result: dict, count: int = 3) -> list[str]:
    return [e for e in result.get("errors", []) if e][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="vllm,stack,ws,responses",
                        help="comma-separated subset of vllm,stack,ws,responses (ws and "
                             "responses: this stack's /ws and /v1/responses sockets)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--prompts-per-level", type=int, default=4,
                        help="--num-prompts is this times the concurrency")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--kv-cache-gib", type=float, default=1.0,
                        help="VLLM_CPU_KVCACHE_SPACE for both (the worker's default)")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--result-dir", help="where the result JSON and logs go (default: a "
                                             "new /tmp/openai-sbs-* directory)")
    args = parser.parse_args()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if unknown := [p for p in paths if p not in PATHS]:
        parser.error(f"--paths: unknown {', '.join(unknown)} (choose from {', '.join(PATHS)})")

    result_dir = Path(args.result_dir or tempfile.mkdtemp(prefix="openai-sbs-", dir="/tmp"))
    result_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(model_dir=build_models()["chat"], levels=args.concurrency,
                        prompts_per_level=args.prompts_per_level, input_len=args.input_len,
                        output_len=args.output_len, kv_cache_gib=args.kv_cache_gib,
                        vllm_python=args.vllm_python, result_dir=result_dir)
    print(f"results and logs in {result_dir}", flush=True)

    results: dict[str, dict[int, dict]] = {}
    failures: dict[str, str] = {}
    servers = [p for p in paths if p not in STACK_PATHS]
    if any(p in STACK_PATHS for p in paths):
        servers.append("stack")
    for path in servers:
        results[path] = {}
        also = [p for p in paths if p in ("ws", "responses")] if path == "stack" else []
        try:
            run_path(settings, path, results, also, http=path != "stack" or "stack" in paths)
        except PathFailed as err:
            failures[path] = str(err)
    if "stack" not in paths:
        results.pop("stack", None)

    print()
    print(table(settings, results))
    for path, by_level in results.items():
        for level, r in by_level.items():
            if r["failed"] and "errors" in r:
                print(f"\n{PATHS[path]} at {level}: {r['failed']} requests failed, e.g. "
                      f"{first_errors(r)}")
    for path, message in failures.items():
        print(f"\n{PATHS[path]} FAILED:\n{message}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
