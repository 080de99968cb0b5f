"""Stop sequences over a streamed reply: text is passed on as it comes, except a tail that
could still turn into a stop sequence, which waits for the next piece."""

from __future__ import annotations


class StopMatcher:
    """``feed`` returns the text that is safe to pass on and whether a stop sequence was
    met (the text before it is returned; the sequence and anything after are dropped)."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        buf = self.held + text
        hit = min((i for s in self.stops if (i := buf.find(s)) >= 0), default=-1)
        if hit >= 0:
            self.held = ""
            return buf[:hit], True
        keep = 0
        for stop in self.stops:  # the longest tail of buf that begins some stop sequence
            for n in range(min(len(stop) - 1, len(buf)), keep, -1):
                if stop.startswith(buf[-n:]):
                    keep = n
                    break
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        """The reply ended without a stop sequence: the held tail is reply text after all."""
        held, self.held = self.held, ""
        return held
