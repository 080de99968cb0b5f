"""``keys [--dir DIR] [--client NAME ...]``: CurveZMQ keys for the broker's tcp:// endpoints.

Makes what is missing in the keys directory (default: ``[broker] curve_dir``, else
``RUN_DIR/keys``, where the supervisor looks): the broker's keypair, the ``local`` bundle the
supervisor gives its own workers and front, and one bundle per ``--client`` for workers or
fronts on other hosts. Existing keys are kept. Exit 0, 2 for a bad client name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from broker.curve import CLIENTS_DIR
from supervisor.keys import LOCAL_CLIENT, KeyNameError, make_keys

EXIT_USAGE = 2


def run(keys_dir: Path, clients: list[str]) -> int:
    names = [LOCAL_CLIENT, *(c for c in clients if c != LOCAL_CLIENT)]
    try:
        made = make_keys(keys_dir, names)
    except KeyNameError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    allowed = sorted(p.stem for p in (keys_dir / CLIENTS_DIR).glob("*.key"))
    print(f"keys in {keys_dir} (mode 0700): broker keypair; clients let in: {', '.join(allowed)}")
    print(f"made: {', '.join(made)}" if made else "made nothing: every key asked for exists")
    for name in clients:
        print(f"{name}: copy {keys_dir / name} to its host, then e.g. "
              f"python -m workers --connect tcp://BROKER-HOST:PORT --curve-dir DIR ...")
    print(f"revoke a client: delete {keys_dir / CLIENTS_DIR}/NAME.key (refused from its next connection)")
    return 0
