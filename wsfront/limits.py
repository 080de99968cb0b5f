"""Sliding-window rate limits (docs/protocol.md, "Rate limits"), pure: the clock is an
argument."""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most ``limit`` events in any ``window_s`` seconds; a limit or window of 0 disables it.

    Unlike fixed windows, slots free up one by one as old events age out, so a client that
    hit the limit can send again as soon as its oldest event leaves the window.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.events: deque[float] = deque()

    @property
    def enabled(self) -> bool:
        return self.limit > 0 and self.window_s > 0

    def hit(self, now: float) -> float | None:
        """Count one event at ``now``; None if allowed, else seconds until it would be."""
        if not self.enabled:
            return None
        events = self.events
        while events and events[0] <= now - self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return max(0.0, events[0] + self.window_s - now)
        events.append(now)
        return None


class KeyedWindows:
    """One ``SlidingWindow`` per key (persona updates per session), bounded in memory."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.windows: dict[str, SlidingWindow] = {}

    def hit(self, key: str, now: float) -> float | None:
        window = self.windows.get(key)
        if window is None:
            if self.limit <= 0 or self.window_s <= 0:
                return None
            if len(self.windows) >= self.max_keys:
                self._prune(now)
            window = self.windows[key] = SlidingWindow(self.limit, self.window_s)
        return window.hit(now)

    def _prune(self, now: float) -> None:
        """Forget keys whose window is empty; if none is, the oldest half."""
        stale = [k for k, w in self.windows.items() if not w.events or w.events[-1] <= now - self.window_s]
        for key in stale or list(self.windows)[: len(self.windows) // 2]:
            del self.windows[key]
