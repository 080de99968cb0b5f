"""``python -m wsfront --config FILE.json`` or flags. The settings come from the file, then
the env (TEXT_API_KEY, WS_PORT, the guards' limits: as the supervisor applies them), then the
flags."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

import msgspec

from .config import FrontConfig
from .env import SettingError, apply_front_env
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
    try:
        config = apply_front_env(config, os.environ)
    except SettingError as exc:
        parser.error(str(exc))
    for name in ("broker", "host", "port", "deploy_mode", "curve_dir"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
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
