"""``python -m broker --config FILE.json`` or ``python -m broker --frontend EP --backend EP``."""

from __future__ import annotations

import argparse
import logging
import sys

import msgspec

from .config import BrokerConfig
from .curve import KeysError
from .loop import serve


def parse_config(argv: list[str] | None = None) -> BrokerConfig:
    parser = argparse.ArgumentParser(prog="python -m broker", description=__doc__)
    parser.add_argument("--config", help="a JSON file holding a BrokerConfig")
    parser.add_argument("--frontend", help="endpoint the fronts connect to (ROUTER bind)")
    parser.add_argument("--backend", help="endpoint the workers connect to (ROUTER bind)")
    parser.add_argument("--control", help="endpoint the supervisor connects to (ROUTER bind)")
    parser.add_argument("--curve-dir", help="keys directory: tcp:// endpoints speak CurveZMQ "
                        "and let in only its clients (python -m supervisor keys makes one)")
    args = parser.parse_args(argv)
    config = BrokerConfig()
    if args.config:
        with open(args.config, "rb") as f:
            config = msgspec.json.decode(f.read(), type=BrokerConfig)
    if args.frontend:
        config.frontend = args.frontend
    if args.backend:
        config.backend = args.backend
    if args.control:
        config.control = args.control
    if args.curve_dir:
        config.curve_dir = args.curve_dir
    if not config.frontend or not config.backend:
        parser.error("both --frontend and --backend endpoints are needed")
    return config


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s broker %(levelname)s %(message)s")
    try:
        config = parse_config(argv)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        sys.exit(f"broker: bad config: {exc}")
    try:
        serve(config)
    except KeysError as exc:
        sys.exit(f"broker: {exc}")


if __name__ == "__main__":
    main()
