"""The front's Prometheus metrics: a tiny counter/gauge/histogram registry rendered in the
text exposition format 0.0.4, and ``FrontMetrics``, the metrics the front declares on it.

Updates run on the hot path (once per streamed token frame), so a labelled update is one
dict lookup keyed by ``tuple(labels.items())``: label names are checked only when a series
first appears, and escaping waits for ``render``. Not thread-safe: the front is one event loop.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from broker.frames import WorkerInfo

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_RESERVED_LABELS = frozenset({"amount", "value"})


def format_value(value: float) -> str:
    """A sample value or ``le`` bound as Prometheus writes it (``+Inf``, ``-Inf``, ``NaN``)."""
    if type(value) is int:
        return str(value)
    value = float(value)  # bool, numpy scalars
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    """``{a="x",b="y"}`` for the pairs given, ``""`` for none."""
    body = ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)
    return "{" + body + "}" if body else ""


class _Series:
    """One labelled time series of a counter or gauge."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: tuple[tuple[str, str], ...]) -> None:
        self.labels = labels
        self.value: float = 0


class _HistogramSeries:
    __slots__ = ("labels", "counts", "sum")

    def __init__(self, labels: tuple[tuple[str, str], ...], buckets: int) -> None:
        self.labels = labels
        self.counts = [0] * buckets  # per bucket, not cumulative; cumulated when rendered
        self.sum: float = 0.0


S = TypeVar("S", _Series, _HistogramSeries)


class _Metric(Generic[S]):
    kind = ""  # the TYPE line

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        labelnames = tuple(labelnames)
        for label in labelnames:
            if not _LABEL_NAME.match(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} on metric {name!r}")
            if label in _RESERVED_LABELS:  # would collide with inc(amount=)/set(value=)
                raise ValueError(f"label name {label!r} on metric {name!r} is reserved")
        if len(set(labelnames)) != len(labelnames):
            raise ValueError(f"duplicate label names on metric {name!r}: {labelnames}")
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._series: dict[tuple[str, ...], S] = {}
        # tuple(labels.items()) as the caller passed them -> series; holds only str values,
        # since 1, 1.0 and True hash alike but are different label values.
        self._fast: dict[tuple[tuple[str, object], ...], S] = {}
        self._default: S | None = None
        if not labelnames:  # an unlabelled metric's one series: its updates skip the lookup
            self._default = self._series[()] = self._new_series(())

    def _new_series(self, labels: tuple[tuple[str, str], ...]) -> S:
        raise NotImplementedError

    def _check_names(self, labels: dict[str, object]) -> None:
        if labels.keys() != set(self.labelnames):
            raise ValueError(f"metric {self.name!r} takes labels {list(self.labelnames)}, "
                             f"got {sorted(labels)}")

    def _resolve(self, labels: dict[str, object]) -> S:
        """The slow path of an update: validate the label names, find or create the series."""
        self._check_names(labels)
        values = tuple(str(labels[label]) for label in self.labelnames)
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = self._new_series(tuple(zip(self.labelnames, values)))
        if all(type(value) is str for value in labels.values()):
            self._fast[tuple(labels.items())] = series
        return series

    def labels(self, **labels: object) -> None:
        """Create the series now, so it is exported as zero before its first update."""
        self._resolve(labels)

    def remove(self, **labels: object) -> None:
        """Drop one series, so it vanishes from the output (a no-op if it does not exist)."""
        self._check_names(labels)
        series = self._series.pop(tuple(str(labels[label]) for label in self.labelnames), None)
        if series is not None:
            self._fast = {key: s for key, s in self._fast.items() if s is not series}

    def clear(self) -> None:
        """Drop every labelled series (an unlabelled metric keeps its one series)."""
        if self.labelnames:
            self._series.clear()
            self._fast.clear()

    def _samples(self, out: list[str]) -> None:
        raise NotImplementedError

    def render_into(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")
        self._samples(out)


class _Scalar(_Metric[_Series]):
    """A metric with one value per series: counters and gauges."""

    def _new_series(self, labels: tuple[tuple[str, str], ...]) -> _Series:
        return _Series(labels)

    def _samples(self, out: list[str]) -> None:
        for key in sorted(self._series):
            series = self._series[key]
            out.append(f"{self.name}{_label_text(series.labels)} {format_value(series.value)}")


class Counter(_Scalar):
    kind = "counter"

    def inc(self, amount: float = 1, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name!r} can only go up, got {amount}")
        series = self._fast.get(tuple(labels.items())) if labels else self._default
        if series is None:
            series = self._resolve(labels)
        series.value += amount


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float, **labels: object) -> None:
        series = self._fast.get(tuple(labels.items())) if labels else self._default
        if series is None:
            series = self._resolve(labels)
        series.value = value

    def inc(self, amount: float = 1, **labels: object) -> None:
        series = self._fast.get(tuple(labels.items())) if labels else self._default
        if series is None:
            series = self._resolve(labels)
        series.value += amount

    def dec(self, amount: float = 1, **labels: object) -> None:
        series = self._fast.get(tuple(labels.items())) if labels else self._default
        if series is None:
            series = self._resolve(labels)
        series.value -= amount


class Histogram(_Metric[_HistogramSeries]):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: Sequence[float],
                 labelnames: Sequence[str] = ()) -> None:
        bounds = [float(b) for b in buckets]
        if not bounds or any(math.isnan(b) for b in bounds) or any(
                lo >= hi for lo, hi in zip(bounds, bounds[1:])):
            raise ValueError(f"histogram {name!r} needs strictly increasing buckets, got {buckets}")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        if "le" in labelnames:
            raise ValueError(f"histogram {name!r} cannot take a label named 'le'")
        self.bounds = tuple(bounds)
        self._le = tuple(format_value(b) for b in bounds)
        super().__init__(name, help, labelnames)

    def _new_series(self, labels: tuple[tuple[str, str], ...]) -> _HistogramSeries:
        return _HistogramSeries(labels, len(self.bounds))

    def observe(self, value: float, **labels: object) -> None:
        series = self._fast.get(tuple(labels.items())) if labels else self._default
        if series is None:
            series = self._resolve(labels)
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le is <=)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value

    def _samples(self, out: list[str]) -> None:
        name = self.name
        for key in sorted(self._series):
            series = self._series[key]
            cumulative = 0
            for le, count in zip(self._le, series.counts):
                cumulative += count
                out.append(f"{name}_bucket{_label_text((*series.labels, ('le', le)))} {cumulative}")
            labels = _label_text(series.labels)
            out.append(f"{name}_sum{labels} {format_value(series.sum)}")
            out.append(f"{name}_count{labels} {cumulative}")


M = TypeVar("M", Counter, Gauge, Histogram)


class Registry:
    """Metrics in registration order, rendered as one text exposition (format 0.0.4)."""

    CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def register(self, metric: M) -> M:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is already registered")
        self._metrics[metric.name] = metric
        return metric

    def render(self) -> str:
        out: list[str] = []
        for metric in self._metrics.values():
            metric.render_into(out)
        return "\n".join(out) + "\n" if out else ""


# 1 ms .. 10 s, dense where a voice assistant's first token should land (20-500 ms)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2,
                   0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
TURN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0,
                30.0, 60.0)
TURN_OUTCOMES = ("done", "cancelled", "error")
# The client protocols, a label of the turn metrics: the Yap WebSocket, OpenAI Chat
# Completions over HTTP, the OpenAI Responses API over WebSocket.
PROTOCOLS = ("yap", "openai_chat", "openai_responses")


class FrontMetrics:
    """Every metric the front exports, on its own registry; the server updates the
    attributes directly (``metrics.turns_total.inc(deploy_mode="both")``)."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        p = "textserve_"
        worker = ("name", "kind")
        self.connections_active = r.register(Gauge(
            p + "connections_active", "Open client WebSocket connections."))
        self.connections_total = r.register(Counter(
            p + "connections_total", "Client WebSocket connections accepted."))
        self.connections_rejected_total = r.register(Counter(
            p + "connections_rejected_total", "Client connections refused, by reason.",
            ("reason",)))
        self.turns_total = r.register(Counter(
            p + "turns_total", "Turns started, by deploy mode and client protocol.",
            ("deploy_mode", "protocol")))
        self.turns_ended_total = r.register(Counter(
            p + "turns_ended_total", "Turns ended, by outcome (done, cancelled, error) and "
            "client protocol.", ("outcome", "protocol")))
        for outcome in TURN_OUTCOMES:  # exported as 0 from the start, so rate() sees them
            for protocol in PROTOCOLS:
                self.turns_ended_total.labels(outcome=outcome, protocol=protocol)
        self.errors_total = r.register(Counter(
            p + "errors_total", "Errors sent to clients, by error code and client protocol.",
            ("code", "protocol")))
        self.cancels_total = r.register(Counter(
            p + "cancels_total", "Turns cancelled by the client or by barge-in."))
        self.tokens_streamed_total = r.register(Counter(
            p + "tokens_streamed_total", "Completion tokens streamed to clients."))
        self.ttft_seconds = r.register(Histogram(
            p + "ttft_seconds", "Time from a turn's start to its first streamed token, by "
            "client protocol.", LATENCY_BUCKETS, ("protocol",)))
        self.toolcall_latency_seconds = r.register(Histogram(
            p + "toolcall_latency_seconds", "Time from a turn's start to its tool decision.",
            LATENCY_BUCKETS))
        self.turn_duration_seconds = r.register(Histogram(
            p + "turn_duration_seconds", "Time from a turn's start to its end, any outcome.",
            TURN_BUCKETS))
        self.worker_load = r.register(Gauge(
            p + "worker_load", "Requests in flight on a worker.", worker))
        self.worker_capacity = r.register(Gauge(
            p + "worker_capacity", "Concurrent requests a worker accepts.", worker))
        self.worker_ready = r.register(Gauge(
            p + "worker_ready", "1 if a worker takes new requests, 0 if it is draining.", worker))
        self.broker_queued = r.register(Gauge(
            p + "broker_queued", "Requests waiting in the broker for a free worker."))

    def set_workers(self, workers: list[WorkerInfo], queued: int) -> None:
        """Replace the worker gauges with the broker's latest status; a worker that is gone
        disappears. Two entries with one name and kind (a restart the broker has not expired
        yet) add their load and capacity, and count as ready if either is."""
        merged: dict[tuple[str, str], tuple[int, int, int]] = {}
        for info in workers:
            load, capacity, ready = merged.get((info.name, info.kind), (0, 0, 0))
            merged[info.name, info.kind] = (load + info.load, capacity + info.capacity,
                                            ready | (info.state == "ready"))
        for gauge in (self.worker_load, self.worker_capacity, self.worker_ready):
            gauge.clear()
        for (name, kind), (load, capacity, ready) in merged.items():
            self.worker_load.set(load, name=name, kind=kind)
            self.worker_capacity.set(capacity, name=name, kind=kind)
            self.worker_ready.set(ready, name=name, kind=kind)
        self.broker_queued.set(queued)

    def render(self) -> str:
        return self.registry.render()
