"""HTTP/1.1 for the front, in bytes: requests parsed by ``httptools`` (llhttp, the parser
uvicorn uses), responses and chunked streams written by hand, as they are a few bytes each.

Pure apart from the parser object: ``RequestReader`` is fed what the socket read and returns
complete requests; the functions below return the bytes of a response. The shell
(``wsfront.connection``) moves them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

import httptools

# The head of a request (request line and headers) may not be bigger than this.
MAX_HEAD_BYTES: Final = 64 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes = b""
    keep_alive: bool = True
    http_10: bool = False
    raw_head: bytes = b""  # what the client sent up to the end of the headers (WebSocket upgrades)

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.before: list[Request] = []  # requests completed before the bad one


class Upgrade(Exception):
    """The client asked to switch protocols (a WebSocket handshake): the request and the
    bytes after its head belong to the new protocol."""

    def __init__(self, request: Request, rest: bytes) -> None:
        super().__init__("upgrade")
        self.request = request
        self.rest = rest


@dataclass(slots=True)
class _Partial:
    url: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    body_bytes: int = 0
    head_bytes: int = 0
    head_done: bool = False


class RequestReader:
    """Feeds bytes to llhttp; ``feed`` returns the requests completed by them, in order.

    Raises ``BadRequest`` (the connection cannot go on: answer and close), ``Upgrade``.
    ``max_body`` bounds a request body (413); ``on_head(request)`` is told of each head as
    soon as it is complete (for ``Expect: 100-continue``).
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._partial = _Partial()
        self._done: list[Request] = []
        self._head = bytearray()  # raw bytes of the head being read
        self._error: BadRequest | None = None
        self.continue_wanted = False

    def feed(self, data: bytes) -> list[Request]:
        head_before = bytes(self._head)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            request = self._done.pop()  # llhttp completes the message before it stops
            request.raw_head = head_before + data[:offset]
            raise Upgrade(request, data[offset:]) from None
        except httptools.HttpParserError as exc:
            bad = self._error or BadRequest(400, f"malformed HTTP request: {exc}")
            bad.before, self._done = self._done, []
            raise bad from None
        if not self._partial.head_done:
            self._head += data if not self._done else b""
            if len(self._head) > MAX_HEAD_BYTES:
                raise BadRequest(431, f"the request head is over {MAX_HEAD_BYTES} bytes")
        done, self._done = self._done, []
        return done

    # ------------------------------------------------------------ llhttp callbacks

    def on_url(self, url: bytes) -> None:
        self._partial.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._partial.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        partial = self._partial
        partial.head_done = True
        length = partial.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            self._fail(413, f"the body is {length} bytes; the limit is {self.max_body}")
        self.continue_wanted = partial.headers.get("expect", "").lower() == "100-continue"

    def on_body(self, body: bytes) -> None:
        partial = self._partial
        partial.body_bytes += len(body)
        if partial.body_bytes > self.max_body:
            self._fail(413, f"the body is over the limit of {self.max_body} bytes")
        partial.body.append(body)

    def on_message_complete(self) -> None:
        self._done.append(self._request(b"".join(self._partial.body)))
        self._partial = _Partial()
        self._head = bytearray()
        self.continue_wanted = False

    def _fail(self, status: int, message: str) -> None:
        self._error = BadRequest(status, message)
        raise self._error

    def _request(self, body: bytes) -> Request:
        partial = self._partial
        try:
            url = httptools.parse_url(partial.url)
        except httptools.HttpParserInvalidURLError:
            self._fail(400, "malformed request target")
        return Request(
            method=self._parser.get_method().decode("latin-1"),
            path=url.path.decode("latin-1") if url.path else "/",
            query=url.query.decode("latin-1") if url.query else "",
            headers=partial.headers, body=body, keep_alive=self._parser.should_keep_alive(),
            http_10=self._parser.get_http_version() == "1.0")


# ---------------------------------------------------------------- responses

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


def response(status: int, body: bytes, content_type: str = "application/json",
             headers: tuple[tuple[str, str], ...] = (), keep_alive: bool = True) -> bytes:
    """A whole response, framed by Content-Length."""
    lines = [f"content-type: {content_type}", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if not keep_alive:
        lines.append("connection: close")
    return _status_line(status) + ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def stream_head(status: int, content_type: str, headers: tuple[tuple[str, str], ...] = (),
                chunked: bool = True) -> bytes:
    """The head of a response whose body follows in pieces (``chunk``, then ``LAST_CHUNK``);
    an HTTP/1.0 client gets the body unframed and the connection closed after it."""
    lines = [f"content-type: {content_type}", "cache-control: no-cache"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("transfer-encoding: chunked" if chunked else "connection: close")
    return _status_line(status) + ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)
