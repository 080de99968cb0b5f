"""CurveZMQ for the broker's tcp:// endpoints: the keys layout, both ends' socket options, and
the broker's ZAP decisions (who may connect) and refusal log lines.

A keys directory (``python -m supervisor keys`` makes one; owner-only, 0700 / 0600)::

    broker.key  broker.key_secret     the broker's keypair (its secret never leaves the host)
    clients/NAME.key                  the public keys the broker lets in (delete one to revoke)
    NAME/                             one client's bundle, copied as is to the host that uses it:
        broker.key                    the broker's public key (whom to trust)
        client.key client.key_secret  the client's own keypair

A client (worker, front) is given a bundle directory (``--curve-dir``); the broker is given the
keys directory. The allowed keys are read again at each handshake, so a bundle made while the
broker runs works at once and a revoked one is refused from its next connection.
"""

from __future__ import annotations

import errno

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

SERVER = "broker"
CLIENT = "client"
CLIENTS_DIR = "clients"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks, by the ZAP spec (RFC 27)
ZAP_VERSION = b"1.0"
LOG_EVERY_S = 30.0  # the same refusal is logged once per this, with a count of the repeats


class KeysError(ValueError):
    """Missing or unreadable key files; one line for an operator."""


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server: bytes  # the broker's public key


def is_tcp(endpoint: str) -> bool:
    return endpoint.startswith("tcp://")


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, private = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeysError(f"cannot read {path}: {e}; make keys with `python -m supervisor keys`") from None
    if secret and not private:
        raise KeysError(f"{path} holds no secret key")
    return public, private


def load_client(bundle: str | os.PathLike[str]) -> ClientKeys:
    """A client's bundle directory: its keypair and the broker's public key."""
    d = Path(os.path.expanduser(bundle))
    public, secret = _load(d / f"{CLIENT}.key_secret", secret=True)
    server, _ = _load(d / f"{SERVER}.key", secret=False)
    assert secret is not None
    return ClientKeys(public, secret, server)


def load_server(keys_dir: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """The broker's (public, secret) keys."""
    public, secret = _load(Path(os.path.expanduser(keys_dir)) / f"{SERVER}.key_secret", secret=True)
    assert secret is not None
    return public, secret


def allowed_clients(keys_dir: str | os.PathLike[str]) -> set[bytes]:
    """The z85 public keys in ``clients/`` (empty if there is none)."""
    d = Path(os.path.expanduser(keys_dir)) / CLIENTS_DIR
    if not d.is_dir():
        return set()
    return set(zmq.auth.load_certificates(d))


def secure_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Before ``connect``: speak CURVE to a broker whose public key is ``keys.server``."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


def secure_server(sock: zmq.Socket, public: bytes, secret: bytes, domain: str) -> None:
    """Before ``bind``: a CURVE server whose clients the ZAP handler vets (``domain`` names the
    endpoint in the broker's log)."""
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
    sock.zap_domain = domain.encode()


@dataclass
class RefusalLog:
    """Say each kind of refusal once per ``every_s``, then how often it repeated (pure: the
    clock is an argument). A refused client retries every few hundred ms."""

    every_s: float = LOG_EVERY_S
    _last: dict[tuple[str, ...], tuple[float, int]] = field(default_factory=dict)

    def note(self, key: tuple[str, ...], now: float) -> int | None:
        """None: stay quiet; else log now, and this many repeats were kept quiet before."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every_s:
            self._last[key] = (last[0], last[1] + 1)
            return None
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]


def zap_reply(request: list[bytes], allowed: Callable[[], set[bytes]]) -> tuple[list[bytes], str | None]:
    """Answer one ZAP request: CURVE clients whose public key is allowed get 200, everyone
    else 400. Returns the reply frames and, for a refusal, what to log."""
    if len(request) < 6:
        return [ZAP_VERSION, request[1] if len(request) > 1 else b"", b"400", b"bad ZAP request", b"", b""], \
            "a malformed ZAP request"
    version, request_id, domain, address, _identity, mechanism = request[:6]
    credentials = request[6:]
    if version != ZAP_VERSION:
        return [ZAP_VERSION, request_id, b"400", b"bad ZAP version", b"", b""], "a ZAP request of another version"
    who = f"{address.decode(errors='replace') or '?'} on the {domain.decode(errors='replace')} endpoint"
    if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
        return [ZAP_VERSION, request_id, b"400", b"CURVE required", b"", b""], \
            f"refused a client from {who}: it does not speak CURVE"
    key = z85.encode(credentials[0])
    if key in allowed():
        return [ZAP_VERSION, request_id, b"200", b"OK", key, b""], None
    return [ZAP_VERSION, request_id, b"400", b"unknown key", b"", b""], \
        f"refused a client from {who}: its public key {key.decode()} is not among the allowed keys"


# Monitor events that mean a handshake failed before the ZAP handler was asked.
HANDSHAKE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def handshake_failure(event: dict[str, object], domain: str) -> str:
    """A log line for a monitor event from ``HANDSHAKE_FAILURES``."""
    value = event.get("value")
    if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        why = "it does not speak CURVE (no keys)"
    elif value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        why = "its handshake does not decrypt (it trusts another broker key)"
    elif event.get("event") == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and value in (
            errno.EPIPE, errno.ECONNRESET):
        # A client without CURVE often hangs up on the greeting before libzmq names the
        # mechanism mismatch; which of the two is reported is a race.
        why = "it hung up during the handshake (a client without CURVE keys, or one that gave up)"
    else:
        why = f"handshake failed ({value})"
    return f"refused a client on the {domain} endpoint: {why}"


# What a client socket's monitor reports about its CurveZMQ handshakes (HandshakeWatch).
CLIENT_EVENTS = (zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
                 | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                 | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)


@dataclass
class HandshakeWatch:
    """A client's view of being refused by a CurveZMQ broker, from its socket's monitor events
    (pure). The broker logs why it refuses; this says so on the client's side too, which
    otherwise sees only silence.

    An unknown client key draws a ZAP refusal (HANDSHAKE_FAILED_AUTH with the ZAP status); a
    wrong ``broker.key`` makes the broker drop the connection mid-handshake, which the client
    sees as a disconnect with no handshake succeeded since it connected.
    """

    public_key: str  # this client's, as its log names it
    _handshaking: bool = False

    def on_event(self, event: int, value: int, endpoint: str) -> str | None:
        """One line for the client's log when ``event`` means the broker refused it."""
        if event == zmq.EVENT_CONNECTED:
            self._handshaking = True
        elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._handshaking = False
        elif event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self._handshaking = False
            return (f"the broker at {endpoint} refused this client's CurveZMQ key {self.public_key} "
                    f"(ZAP status {value}): it is not among the broker's allowed keys; make a "
                    "bundle with `python -m supervisor keys --client NAME` on the broker's host "
                    "and pass that (--curve-dir)")
        elif event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            self._handshaking = False
            return (f"the CurveZMQ handshake with the broker at {endpoint} failed (monitor event "
                    f"{event}, value {value}): is this bundle's broker.key the broker's public key?")
        elif event == zmq.EVENT_DISCONNECTED and self._handshaking:
            self._handshaking = False
            return (f"the broker at {endpoint} dropped the connection during the CurveZMQ "
                    "handshake: this bundle's broker.key is probably not the broker's public key")
        return None
