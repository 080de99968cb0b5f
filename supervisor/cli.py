"""``python -m supervisor start|stop|status|restart|logs|attach|detach``: the operator's commands.

    start   [-c PATH] [--foreground]  run the stack detached; wait until /healthz answers 200
    stop    [NAME|all] [--grace S]    graceful ordered stop (front, workers, broker), then SIGKILL;
                                      or one process (a worker is drained first)
    status  [-c PATH] [--json]        one line per process (state, pid, in-flight turns, RSS)
    restart NAME|KIND|all [--grace S] drain and restart workers one at a time; or broker, wsfront
    logs    NAME [-n N] [-f]          the last N lines of one process's log; -f follows it
    attach  --kind chat|tool [--engine E] [--model M] [--device D] [--name N] [--python P]
            [--capacity C] [--gpu-frac F] [--cpus LIST]
                                      add a worker at runtime; wait until it registers
    detach  NAME [--grace S]          drain a worker, stop it, drop it from the stack
    keys    [--dir DIR] [--client NAME ...]
                                      CurveZMQ keys for tcp:// endpoints (broker, local, clients)

``-c`` defaults to ./supervisor.toml; the run dir comes from that file and RUN_DIR, so
stop/status/restart find the supervisor that ``start`` ran with the same file and env.

Exit codes:
    0  done: started and healthy / stopped or was not running / all RUNNING / restarted /
       attached and RUNNING / detached
    1  failed: one line on stderr says why (already running, a child gave up, timeout,
       some process not RUNNING, supervisor not answering)
    2  usage or config error (bad flag, bad key in the file, bad env var, TEXT_API_KEY missing,
       an attach the supervisor refuses: a bad field, a name in use)
    3  not running (status and restart; LSB's "program is not running")
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from supervisor import control
from supervisor.commands import attach, detach, keys, logs, restart, start, status, stop
from supervisor.config import ConfigError, curve_dir_of, load_config, load_stack, run_dir_of
from supervisor.rundir import RunDir

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor",
        description="Run and control the textserve stack (broker, workers, WebSocket front).",
        epilog="Exit codes: 0 ok, 1 failed, 2 usage/config error, 3 not running.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{start,stop,status,restart,logs,attach,detach,keys}")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("-c", "--config", type=Path, default=Path("supervisor.toml"), help="default: ./supervisor.toml")

    p = verbs.add_parser("start", parents=[config], help="start the stack and wait until it is healthy")
    p.add_argument("--foreground", action="store_true", help="run the supervisor in this process (logs to stderr)")
    grace = argparse.ArgumentParser(add_help=False)
    grace.add_argument("--grace", type=float, metavar="S",
                       help="seconds a drained worker's turns may run on (default: [supervisor] drain_grace_s)")
    p = verbs.add_parser("stop", parents=[config, grace],
                         help="stop the stack (front, workers, then broker), or one process")
    p.add_argument("name", nargs="?", default="all", help="a process name, or all (default)")
    p = verbs.add_parser("status", parents=[config], help="show each process")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = verbs.add_parser("restart", parents=[config, grace], help="restart processes, draining workers first")
    p.add_argument("name", help="broker, wsfront, a worker name (chat-0, ...), a kind (chat, tool) or all")
    p = verbs.add_parser("logs", parents=[config], help="show (and follow) one process's log")
    p.add_argument("name", help="broker, wsfront, supervisor or a worker name")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    p = verbs.add_parser("attach", parents=[config],
                         help="add a worker to the running stack (runtime only: the file is not changed)",
                         description="Fields left out are copied from the stack's first worker of the kind.")
    p.add_argument("--kind", required=True, choices=("chat", "tool"))
    p.add_argument("--engine", default="", help="chat: hf | vllm | trt; tool: classifier")
    p.add_argument("--model", default="", help="HF id, local path or builtin:NAME (smollm2, screenshot-intent, tiny-chat, tiny-tool)")
    p.add_argument("--device", default="", help="cpu, cuda or cuda:N[,M]")
    p.add_argument("--name", default="", help="default: KIND-N, the lowest N not in use")
    p.add_argument("--python", default="", help="the worker's interpreter (an engine's virtualenv)")
    p.add_argument("--capacity", type=_positive_int, default=0, help="concurrent requests")
    p.add_argument("--gpu-frac", type=float, default=0.0, help="GPU memory share (default: the single-process server's split)")
    p.add_argument("--cpus", default="", help='cores to pin it to, e.g. "2-3", or "none" (default: the CPU plan)')
    p = verbs.add_parser("detach", parents=[config, grace], help="drain and stop a worker, and drop it from the stack")
    p.add_argument("name", help="a worker name")
    p = verbs.add_parser("keys", parents=[config], help="make CurveZMQ keys for tcp:// endpoints")
    p.add_argument("--dir", type=Path, help="keys directory (default: [broker] curve_dir, else RUN_DIR/keys)")
    p.add_argument("--client", action="append", default=[], metavar="NAME",
                   help="also make a key bundle for a worker or front on another host (repeatable)")
    return parser


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return n


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = dict(os.environ if env is None else env)
    try:
        if args.verb == "start":
            return start.run(load_stack(args.config, env), args.config, env, foreground=args.foreground)
        cfg = load_config(args.config)  # no TEXT_API_KEY needed to stop or inspect
        run_dir = RunDir(run_dir_of(cfg, env))
        if args.verb == "stop":
            return stop.run(run_dir, cfg.supervisor, args.name, args.grace)
        if args.verb == "status":
            return status.run(run_dir, as_json=args.json)
        if args.verb == "logs":
            return logs.run(run_dir, args.name, lines=args.lines, follow=args.follow)
        if args.verb == "attach":
            request = control.AttachRequest(
                kind=args.kind, name=args.name, engine=args.engine, model=args.model, device=args.device,
                python=args.python, capacity=args.capacity, gpu_frac=args.gpu_frac, cpus=args.cpus)
            return attach.run(run_dir, cfg.supervisor, request)
        if args.verb == "detach":
            return detach.run(run_dir, cfg.supervisor, args.name, args.grace)
        if args.verb == "keys":
            return keys.run(args.dir.absolute() if args.dir else curve_dir_of(cfg, env), args.client)
        return restart.run(run_dir, cfg.supervisor, args.name, args.grace)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
