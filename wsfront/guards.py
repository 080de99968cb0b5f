"""The connection guards every client protocol shares, pure (the clock is an argument): the
API key check, the frame-size limit, the per-connection message and cancel rate limits and the
idle deadline. Capacity (one budget of open connections for the whole front) is the shell's
semaphore; persona changes are limited per session id across connections (``KeyedWindows``).
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from .config import FrontConfig
from .limits import SlidingWindow


def api_key_ok(given: str, expected: str) -> bool:
    """Constant-time comparison: the time taken says nothing about how much was right."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Refusal(NamedTuple):
    """A client message the guards turn away: an error for the client, and a close code when
    the connection cannot go on."""

    code: str
    message: str
    retry_after_s: float | None = None
    close: int | None = None


class ConnectionGuards:
    """The limits of one connection; ``now`` is a monotonic clock in seconds."""

    def __init__(self, config: FrontConfig, now: float) -> None:
        self.max_message_bytes = config.max_message_bytes
        self.idle_timeout_s = config.idle_timeout_s
        self.messages = SlidingWindow(config.max_messages_per_window, config.message_window_s)
        self.cancels = SlidingWindow(config.max_cancels_per_window, config.cancel_window_s)
        self.last_activity = now

    def on_message(self, raw: str | bytes, now: float) -> Refusal | None:
        """Every client message, before it is read: it counts as activity, and against the
        size and rate limits."""
        self.last_activity = now
        if len(raw) > self.max_message_bytes:  # chars ~ bytes; str may be 4x smaller
            size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
            if size > self.max_message_bytes:
                return Refusal("message_too_large", f"frame of {size} bytes; the limit is "
                               f"{self.max_message_bytes}", close=1009)
        if (retry := self.messages.hit(now)) is not None:
            return Refusal("rate_limited", "too many messages", retry)
        return None

    def on_cancel(self, now: float) -> Refusal | None:
        if (retry := self.cancels.hit(now)) is not None:
            return Refusal("rate_limited", "too many cancels", retry)
        return None

    def idle_deadline(self) -> float | None:
        """When the connection is closed for idleness, if nothing arrives before."""
        if self.idle_timeout_s <= 0:
            return None
        return self.last_activity + self.idle_timeout_s

    def idle(self, now: float, busy: bool) -> bool:
        """True once the deadline passed with nothing running; a turn in progress is
        activity too (it moves the deadline on)."""
        deadline = self.idle_deadline()
        if deadline is None or now < deadline:
            return False
        if busy:
            self.last_activity = now
            return False
        return True
