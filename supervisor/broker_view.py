"""What the supervisor knows of the broker's table, from the status reports it answers our
``Watch`` with (pure: the clock is an argument).

A worker is *registered* while a fresh report lists it with the pid we spawned; it is *silent*
for as long as the broker has not heard from that process (reports carry ``silent_s``, and a
worker the broker expired drops out of them, so its silence keeps growing). Reports older than
``stale_after_s`` say nothing: the broker is down or restarting, and nobody is judged silent
then; the first report after such a gap, or from a new broker process (another ``epoch``),
starts every worker's silence afresh, so workers get the time to register with it.
"""

from __future__ import annotations

from broker.frames import BrokerStatus, WorkerInfo


class BrokerView:
    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.status: BrokerStatus | None = None
        self.at: float | None = None  # when the last report came
        self._heard: dict[str, tuple[int, float]] = {}  # name -> (pid, when the broker last heard it)

    def on_status(self, status: BrokerStatus, now: float) -> None:
        if not self.fresh(now) or (self.status is not None and self.status.epoch != status.epoch):
            self._heard = {name: (pid, now) for name, (pid, _) in self._heard.items()}
        self.status, self.at = status, now
        for w in status.workers:
            heard = now - w.silent_s
            old = self._heard.get(w.name)
            if old is None or old[0] != w.pid or old[1] < heard:
                self._heard[w.name] = (w.pid, heard)

    def fresh(self, now: float) -> bool:
        return self.at is not None and now - self.at <= self.stale_after_s

    def worker(self, name: str, pid: int | None, now: float) -> WorkerInfo | None:
        """The broker's entry for this process, if a fresh report lists it."""
        if self.status is None or not self.fresh(now):
            return None
        return next((w for w in self.status.workers if w.name == name and w.pid == pid), None)

    def silent_for(self, name: str, pid: int | None, now: float) -> float | None:
        """Seconds the broker has not heard from this process; None when nothing can be said
        (it never registered, or the reports are stale)."""
        heard = self._heard.get(name)
        if heard is None or heard[0] != pid or not self.fresh(now):
            return None
        return max(now - heard[1], 0.0)

    def in_flight(self, now: float) -> int | None:
        """Turns running on every worker, as the broker books them."""
        if self.status is None or not self.fresh(now):
            return None
        return sum(w.load for w in self.status.workers)
