"""``python -m workers``: one worker process (a chat or tool engine) serving a broker.

    python -m workers --config worker.json          # a WorkerConfig as JSON (the supervisor's way)
    python -m workers --kind chat --engine hf --model builtin:tiny-chat --connect tcp://host:5556
    python -m workers ... --connect tcp://host:5556 --curve-dir host-b   # a CurveZMQ broker's keys
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading
from pathlib import Path

import msgspec

from broker.curve import load_client

from .builtin_models import BUILTIN_PREFIX, resolve_model
from .config import WorkerConfig

DEFAULT_MODELS = {"chat": BUILTIN_PREFIX + "smollm2", "tool": BUILTIN_PREFIX + "screenshot-intent"}


def parse_config(argv: list[str] | None = None) -> WorkerConfig:
    parser = argparse.ArgumentParser(
        prog="python -m workers", description="Run one worker (a chat or tool engine).")
    parser.add_argument("--config", type=Path, help="WorkerConfig as a JSON file")
    parser.add_argument("--name", help="worker name, also its ZeroMQ identity (default KIND-0)")
    parser.add_argument("--kind", choices=("chat", "tool"))
    parser.add_argument("--engine", help="chat: hf | vllm | trt; tool: classifier")
    parser.add_argument("--model", help="HF id, local path or builtin:NAME (default: builtin:smollm2 "
                        "for chat, builtin:screenshot-intent for tool)")
    parser.add_argument("--connect", help="the broker's worker endpoint, e.g. tcp://host:5556")
    parser.add_argument("--curve-dir", help="client key bundle for a CurveZMQ broker "
                        "(a directory `python -m supervisor keys --client NAME` made)")
    parser.add_argument("--device", help='"cpu" or "cuda:N"')
    parser.add_argument("--capacity", type=int, help="concurrent requests accepted")
    parser.add_argument("--model-cache", help="where builtin models are built")
    args = parser.parse_args(argv)

    fields: dict[str, object] = {}
    if args.config is not None:
        try:
            fields = msgspec.json.decode(args.config.read_bytes(), type=dict)
        except (OSError, msgspec.DecodeError) as exc:
            parser.error(f"{args.config}: {exc}")
    flags = {"name": args.name, "kind": args.kind, "engine": args.engine, "model": args.model,
             "connect": args.connect, "device": args.device, "capacity": args.capacity,
             "model_cache": args.model_cache, "curve_dir": args.curve_dir}
    fields.update({k: v for k, v in flags.items() if v is not None})  # flags win over the file
    if "kind" not in fields:
        parser.error("--kind (or kind in --config) is required")
    fields.setdefault("name", f"{fields['kind']}-0")
    try:
        cfg = msgspec.convert(fields, WorkerConfig)
    except msgspec.ValidationError as exc:
        parser.error(f"{args.config or 'flags'}: {exc}")
    if not cfg.connect:
        parser.error("--connect (or connect in --config) is required")
    return cfg


def setup_logging(name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Every line carries the worker name: several workers often share one terminal or file.
    fmt = f"%(asctime)s {name.replace('%', '%%')} %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # transformers' continuous batching logger installs its own handler unless it already
    # has one; give it ours, so every line carries the worker name, and keep only warnings.
    cb_logger = logging.getLogger("ContinuousBatchingLogger")
    cb_logger.addHandler(handler)
    cb_logger.propagate = False
    cb_logger.setLevel(logging.WARNING)


async def serve(cfg: WorkerConfig) -> int:
    from .engines import EngineUnavailable, engine_factory
    from .runtime import WorkerRuntime

    log = logging.getLogger("workers")
    spec = cfg.model or DEFAULT_MODELS[cfg.kind]
    try:
        if cfg.curve_dir:  # unreadable keys fail before a model is loaded
            load_client(cfg.curve_dir)
        factory = engine_factory(cfg.kind, cfg.resolved_engine())  # a typo fails before a build
        path = await asyncio.to_thread(resolve_model, spec, cfg.model_cache)
        engine = factory(msgspec.structs.replace(cfg, model=path))
    except (EngineUnavailable, ValueError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return await WorkerRuntime(cfg, engine, model_label=spec).run()


def main(argv: list[str] | None = None) -> None:
    cfg = parse_config(argv)
    setup_logging(cfg.name)
    try:
        import uvloop
    except ImportError:
        code = asyncio.run(serve(cfg))
    else:
        code = uvloop.run(serve(cfg))
    logging.shutdown()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate()
           if t is not threading.main_thread()):
        # An engine thread that would not stop (a hung step) must not keep a worker the
        # supervisor is waiting on alive.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
