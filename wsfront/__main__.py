"""``python -m wsfront --config FILE.json`` or flags; TEXT_API_KEY / WS_PORT from the env
when neither the file nor a flag sets them."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import msgspec

from .config import FrontConfig
from .server import Front


def parse_config(argv: list[str] | None = None) -> FrontConfig:
    parser = argparse.ArgumentParser(prog="python -m wsfront", description=__doc__)
    parser.add_argument("--config", help="a JSON file holding a FrontConfig")
    parser.add_argument("--broker", help="the broker's frontend endpoint")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--deploy-mode", choices=["both", "chat", "tool"])
    parser.add_argument("--curve-dir", help="client key bundle for a CurveZMQ broker (tcp://)")
    args = parser.parse_args(argv)
    config = FrontConfig()
    if args.config:
        with open(args.config, "rb") as f:
            config = msgspec.json.decode(f.read(), type=FrontConfig)
    for name in ("broker", "host", "port", "deploy_mode", "curve_dir"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.api_key = config.api_key or os.environ.get("TEXT_API_KEY", "")
    if args.port is None and not args.config and os.environ.get("WS_PORT"):
        config.port = int(os.environ["WS_PORT"])
    if not config.broker:
        parser.error("--broker (the broker's frontend endpoint) is needed")
    return config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s wsfront %(levelname)s %(message)s")
    try:
        config = parse_config(argv)
        front = Front(config)
    except (OSError, ValueError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        sys.exit(f"wsfront: {exc}")
    try:
        import uvloop
        uvloop.run(front.serve())
    except ImportError:
        asyncio.run(front.serve())


if __name__ == "__main__":
    main()
