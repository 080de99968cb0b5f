"""Where and how a test client connects: settings from flags over env (the sampling flags
included), the ``/ws`` URL with its API key, and a WebSocket link that turns every failure into
one ``ClientFailure`` line."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .sampling import Sampling, add_sampling_arguments, sampling_from

DEFAULT_URL = "ws://127.0.0.1:8000"
DEFAULT_RECV_TIMEOUT_S = 60.0


class ClientFailure(Exception):
    """Ends a client with a non-zero exit and this one-line message."""


class ServerError(ClientFailure):
    """The server answered with an ``error`` frame; its code and retry hint, for a client that
    can wait and try again (a rate limit)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        super().__init__(error_line(frame))
        self.code = str(frame.get("error_code") or frame.get("code") or "error")
        retry = frame.get("retry_after_s")
        self.retry_after_s = float(retry) if isinstance(retry, (int, float)) else None


@dataclass(frozen=True)
class ClientSettings:
    url: str  # the full WebSocket URL, api_key included
    recv_timeout_s: float  # the longest wait for any one server frame
    gender: str | None
    personality: str | None
    chat_prompt: bool  # False for tool-only deployments: no persona fields are sent
    sampling: Sampling = field(default_factory=dict)  # the start's `sampling` (empty: none sent)

    @property
    def shown_url(self) -> str:
        """The URL without its API key, for printing."""
        parts = urlsplit(self.url)
        query = [(k, "***" if k == "api_key" else v) for k, v in parse_qsl(parts.query)]
        return urlunsplit(parts._replace(query=urlencode(query, safe="*")))

    def persona_fields(self) -> dict[str, str]:
        """The persona part of a ``start`` (empty with ``--no-chat-prompt``)."""
        if not self.chat_prompt:
            return {}
        fields = {"gender": self.gender, "persona_style": self.personality}
        return {k: v for k, v in fields.items() if v}


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection and persona (flags override env)")
    group.add_argument("--url", "--server", dest="url",
                       help=f"server URL, '/ws' appended if missing (env SERVER_WS_URL, "
                            f"default {DEFAULT_URL})")
    group.add_argument("--api-key", help="sent as ?api_key= (env TEXT_API_KEY)")
    group.add_argument("--recv-timeout", type=float,
                       help="seconds to wait for each server frame (env RECV_TIMEOUT_SEC, "
                            f"default {DEFAULT_RECV_TIMEOUT_S:g})")
    group.add_argument("--gender", help="assistant gender woman|man (env GENDER)")
    group.add_argument("--personality", "--style", dest="personality",
                       help="persona style, e.g. wholesome, flirty, nerdy (env PERSONALITY)")
    group.add_argument("--no-chat-prompt", action="store_true",
                       help="send no persona fields (tool-only deployments)")
    add_sampling_arguments(parser)


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> ClientSettings:
    raw_timeout = args.recv_timeout if args.recv_timeout is not None else environ.get(
        "RECV_TIMEOUT_SEC", DEFAULT_RECV_TIMEOUT_S)
    try:
        recv_timeout = float(raw_timeout)
    except ValueError:
        raise ClientFailure(f"RECV_TIMEOUT_SEC must be a number of seconds, got {raw_timeout!r}")
    if recv_timeout <= 0:
        raise ClientFailure(f"the receive timeout must be positive, got {recv_timeout:g}")
    api_key = args.api_key if args.api_key is not None else environ.get("TEXT_API_KEY", "")
    return ClientSettings(
        url=ws_url(args.url or environ.get("SERVER_WS_URL") or DEFAULT_URL, api_key),
        recv_timeout_s=recv_timeout,
        gender=args.gender or environ.get("GENDER") or environ.get("ASSISTANT_GENDER") or None,
        personality=(args.personality or environ.get("PERSONALITY")
                     or environ.get("PERSONA_STYLE") or None),
        chat_prompt=not args.no_chat_prompt,
        sampling=sampling_from(args),
    )


def ws_url(raw: str, api_key: str = "") -> str:
    """``host:port``, ``http://...`` or ``ws://...`` -> ``ws://.../ws?api_key=...``."""
    parts = urlsplit(raw.strip() if "://" in raw else f"ws://{raw.strip()}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ClientFailure(f"not a WebSocket URL: {raw!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws"):
        path += "/ws"
    query = parse_qsl(parts.query)
    if api_key and not any(k == "api_key" for k, _ in query):
        query.append(("api_key", api_key))
    return urlunsplit((scheme, parts.netloc, path, urlencode(query), ""))


class Link:
    """One WebSocket connection that speaks JSON frames.

    A failed send is not raised: the next ``recv`` reads what the server said before it
    closed (an ``authentication_failed`` frame, say) or reports the close itself.
    """

    def __init__(self, ws: ClientConnection, settings: ClientSettings) -> None:
        self.ws = ws
        self.settings = settings

    @classmethod
    async def open(cls, settings: ClientSettings) -> Link:
        try:
            ws = await connect(settings.url, max_size=None, compression=None,
                               open_timeout=settings.recv_timeout_s)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"no handshake within {settings.recv_timeout_s:g}s"
            raise ClientFailure(f"cannot connect to {settings.shown_url}: {reason}") from None
        return cls(ws, settings)

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, frame: dict[str, Any]) -> None:
        try:
            await self.ws.send(json.dumps(frame))
        except ConnectionClosed:
            pass

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        timeout = self.settings.recv_timeout_s if timeout is None else timeout
        try:
            raw = await asyncio.wait_for(self.ws.recv(), max(timeout, 0.0))
        except TimeoutError:
            raise ClientFailure(f"timed out: no frame from the server within {timeout:g}s") from None
        except ConnectionClosed as exc:
            raise ClientFailure(f"the server closed the connection: {closed_reason(exc)}") from None
        try:
            frame = json.loads(raw)
        except ValueError:
            raise ClientFailure(f"the server sent a frame that is not JSON: {raw[:80]!r}") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            raise ClientFailure(f"the server sent a frame without a type: {str(raw)[:80]!r}")
        return frame

    async def check(self) -> None:
        """Ping and wait for the pong: a refused key or a full server shows up now, as a
        ``ClientFailure``, rather than at the first turn."""
        await self.send({"type": "ping"})
        while (frame := await self.recv())["type"] != "pong":
            if frame["type"] == "error":
                raise ServerError(frame)

    async def close(self) -> None:
        """Say goodbye as the protocol asks (``end``), then close."""
        await self.send({"type": "end"})
        await self.ws.close()


def error_line(frame: dict[str, Any]) -> str:
    """An ``error`` frame as one line: code, message, and the field or retry hint."""
    code = frame.get("error_code") or frame.get("code") or "error"
    line = f"server error {code}: {frame.get('message', '')}".rstrip(": ")
    if frame.get("field"):
        line += f" (field {frame['field']})"
    if frame.get("retry_after_s") is not None:
        line += f" (retry after {frame['retry_after_s']}s)"
    return line


def closed_reason(exc: ConnectionClosed) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "no close frame (connection dropped)"
    return f"code {close.code}" + (f", {close.reason}" if close.reason else "")
