"""Making CurveZMQ keys in the layout ``broker.curve`` reads: the broker's keypair, and one
bundle per client (its keypair + the broker's public key) whose public key is let in.

Owner-only from the first byte (umask 077; directories 0700, files 0600). Nothing that exists
is overwritten: running it again only adds what is missing, so the keys the running stack and
remote workers use stay valid.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import zmq.auth

from broker.config import BrokerConfig
from broker.curve import CLIENT, CLIENTS_DIR, SERVER, is_tcp

log = logging.getLogger("supervisor")

LOCAL_CLIENT = "local"  # the bundle the supervisor hands its own workers and front
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyNameError(ValueError):
    pass


def check_client_name(name: str) -> None:
    if not _CLIENT_NAME.match(name) or name in (SERVER, CLIENTS_DIR):
        raise KeyNameError(f"client name {name!r}: use letters, digits, '.', '_', '-' "
                           f"(not {SERVER} or {CLIENTS_DIR})")


def make_keys(keys_dir: str | os.PathLike[str], clients: list[str]) -> list[str]:
    """Create what is missing: the broker's keypair, and a bundle per client. Returns the
    names made ("broker" and client names), in that order."""
    for name in clients:
        check_client_name(name)
    d = Path(os.path.expanduser(keys_dir))
    made: list[str] = []
    old_umask = os.umask(0o077)
    try:
        _private_dir(d)
        _private_dir(d / CLIENTS_DIR)
        if not (d / f"{SERVER}.key_secret").exists():
            zmq.auth.create_certificates(d, SERVER)
            made.append(SERVER)
        for name in clients:
            bundle = d / name
            if (bundle / f"{CLIENT}.key_secret").exists():
                continue
            _private_dir(bundle)
            zmq.auth.create_certificates(bundle, CLIENT)
            shutil.copyfile(d / f"{SERVER}.key", bundle / f"{SERVER}.key")
            shutil.copyfile(bundle / f"{CLIENT}.key", d / CLIENTS_DIR / f"{name}.key")
            made.append(name)
    finally:
        os.umask(old_umask)
    for path in [d, *d.rglob("*")]:
        if path.stat().st_uid == os.getuid():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    return made


def prepare_stack_keys(broker: BrokerConfig) -> None:
    """At supervisor start: the keys the resolved ``[broker]`` needs on tcp:// endpoints, made
    where missing (never replaced), so the stack's own workers and front can connect; remote
    ones need a bundle of their own (``keys --client``)."""
    tcp = [ep for ep in (broker.frontend, broker.backend) if is_tcp(ep)]
    if not tcp:
        return
    if not broker.curve_dir:
        log.warning("%s without CurveZMQ ([broker] curve_dir = \"none\"): anyone who can "
                    "reach it can register a worker or submit turns", ", ".join(tcp))
        return
    made = make_keys(broker.curve_dir, [LOCAL_CLIENT])
    log.info("CurveZMQ on %s with the keys in %s%s", ", ".join(tcp), broker.curve_dir,
             f" (made: {', '.join(made)})" if made else "")


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
