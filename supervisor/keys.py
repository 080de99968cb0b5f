"""Making CurveZMQ keys in the layout ``broker.curve`` reads: the broker's keypair, and one
bundle per client (its keypair + the broker's public key) whose public key is let in.

Owner-only from the first byte (umask 077; directories 0700, files 0600). Nothing that exists
is overwritten: running it again only adds what is missing, so the keys the running stack and
remote workers use stay valid.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import zmq.auth

from broker.curve import CLIENT, CLIENTS_DIR, SERVER

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


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
