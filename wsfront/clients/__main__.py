"""``python -m wsfront.clients <client> [options]``: pick a client, build its settings from
flags over env, run it; exit 0, or 1 with one line on stderr."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping

from . import bench, conversation, gender, live, personality, screen, tool, warmup
from .connection import ClientFailure, add_connection_arguments, settings_from

MODULES = (warmup, bench, live, conversation, tool, personality, gender, screen)
CLIENTS = {m.NAME: m for m in MODULES}
# a name a client is also known by (the single-process server's script names) -> its module
ALIASES = {alias: m for m in MODULES for alias in getattr(m, "ALIASES", ())}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wsfront.clients", description=__doc__)
    sub = parser.add_subparsers(dest="client", required=True, metavar="CLIENT")
    for name, module in CLIENTS.items():
        client = sub.add_parser(name, aliases=getattr(module, "ALIASES", ()), help=module.HELP,
                                description=module.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(client)
        add_connection_arguments(client)
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    args = build_parser().parse_args(argv)
    module = CLIENTS.get(args.client) or ALIASES[args.client]
    try:
        settings = settings_from(args, environ)
        return asyncio.run(module.run(args, settings))
    except ClientFailure as exc:
        sys.stdout.flush()
        print(f"{args.client}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.client}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
