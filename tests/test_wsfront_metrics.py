"""The front's metrics registry and its Prometheus text exposition (format 0.0.4)."""

from __future__ import annotations

import re

import pytest

from broker.frames import Kind, WorkerInfo
from wsfront.metrics import Counter, FrontMetrics, Gauge, Histogram, Registry

# One line of the text format: a comment (HELP/TYPE) or a sample with optional labels.
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABEL = rf"[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}"
_LABELS = rf"\{{{_LABEL}(?:,{_LABEL})*\}}"
_VALUE = r"(?:[+-]?Inf|NaN|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
SAMPLE = re.compile(
    rf"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>{_LABELS})? (?P<value>{_VALUE})")
HELP = re.compile(r"# HELP [a-zA-Z_:][a-zA-Z0-9_:]* (?:[^\\\n]|\\[\\n])*")
TYPE = re.compile(r"# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (?:counter|gauge|histogram|summary|untyped)")


def parse(text: str) -> dict[str, float]:
    """Every sample as ``name{labels}`` -> value; fails on any line that is not valid."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            assert HELP.fullmatch(line), line
        elif line.startswith("# TYPE "):
            assert TYPE.fullmatch(line), line
        else:
            match = SAMPLE.fullmatch(line)
            assert match, line
            key = match["name"] + (match["labels"] or "")
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = float(match["value"])
    return samples


def small_registry() -> Registry:
    registry = Registry()
    requests = registry.register(Counter("app_requests_total", "Requests.", ("code",)))
    inflight = registry.register(Gauge("app_inflight", "In flight."))
    latency = registry.register(Histogram("app_latency_seconds", "Latency.", (0.1, 1)))
    requests.inc(code="500")
    requests.inc(2, code="200")
    inflight.inc(3)
    inflight.dec()
    latency.observe(0.05)
    latency.observe(0.5)
    return registry


def test_small_registry_renders_golden_text():
    assert small_registry().render() == (
        "# HELP app_requests_total Requests.\n"
        "# TYPE app_requests_total counter\n"
        'app_requests_total{code="200"} 2\n'
        'app_requests_total{code="500"} 1\n'
        "# HELP app_inflight In flight.\n"
        "# TYPE app_inflight gauge\n"
        "app_inflight 2\n"
        "# HELP app_latency_seconds Latency.\n"
        "# TYPE app_latency_seconds histogram\n"
        'app_latency_seconds_bucket{le="0.1"} 1\n'
        'app_latency_seconds_bucket{le="1.0"} 2\n'
        'app_latency_seconds_bucket{le="+Inf"} 2\n'
        "app_latency_seconds_sum 0.55\n"
        "app_latency_seconds_count 2\n"
    )


def test_render_is_stable_whatever_the_update_order():
    a, b = Registry(), Registry()
    for registry, order in ((a, ("x", "b", "a")), (b, ("a", "x", "b"))):
        counter = registry.register(Counter("c_total", "C.", ("k", "j")))
        for value in order:
            counter.inc(j="1", k=value)  # keyword order differs from labelnames on purpose
    assert a.render() == b.render()
    assert a.render().splitlines()[2:] == [
        'c_total{k="a",j="1"} 1', 'c_total{k="b",j="1"} 1', 'c_total{k="x",j="1"} 1']


def test_unlabelled_metrics_export_zero_and_labelled_ones_only_their_header():
    registry = Registry()
    registry.register(Counter("idle_total", "Never touched."))
    registry.register(Counter("by_code_total", "Never touched.", ("code",)))
    registry.register(Histogram("idle_seconds", "Never observed.", (1,)))
    assert registry.render() == (
        "# HELP idle_total Never touched.\n# TYPE idle_total counter\nidle_total 0\n"
        "# HELP by_code_total Never touched.\n# TYPE by_code_total counter\n"
        "# HELP idle_seconds Never observed.\n# TYPE idle_seconds histogram\n"
        'idle_seconds_bucket{le="1.0"} 0\nidle_seconds_bucket{le="+Inf"} 0\n'
        "idle_seconds_sum 0.0\nidle_seconds_count 0\n"
    )


def test_histogram_buckets_are_cumulative_with_inf_and_bounds_inclusive():
    registry = Registry()
    hist = registry.register(Histogram("h_seconds", "H.", (0.01, 0.1, 1.0), ("kind",)))
    for value in (0.005, 0.01, 0.05, 0.1, 0.5, 2.0, 30.0):
        hist.observe(value, kind="chat")
    hist.observe(0.2, kind="tool")
    samples = parse(registry.render())
    assert [samples[f'h_seconds_bucket{{kind="chat",le="{le}"}}']
            for le in ("0.01", "0.1", "1.0", "+Inf")] == [2, 4, 5, 7]
    assert samples['h_seconds_count{kind="chat"}'] == 7
    assert samples['h_seconds_sum{kind="chat"}'] == pytest.approx(32.665)
    assert [samples[f'h_seconds_bucket{{kind="tool",le="{le}"}}']
            for le in ("0.01", "0.1", "1.0", "+Inf")] == [0, 0, 1, 1]


def test_histogram_rejects_unsorted_buckets_and_an_le_label():
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "H.", (1, 0.5))
    with pytest.raises(ValueError, match="increasing"):
        Histogram("h", "H.", ())
    with pytest.raises(ValueError, match="'le'"):
        Histogram("h", "H.", (1,), ("le",))
    assert Histogram("h", "H.", (1, float("inf"))).bounds == (1.0, float("inf"))


def test_label_values_escape_backslash_quote_and_newline():
    registry = Registry()
    counter = registry.register(Counter("e_total", "Help with \\ and\nnewline.", ("v",)))
    counter.inc(v='a\\b"c\nd')
    text = registry.render()
    assert "# HELP e_total Help with \\\\ and\\nnewline.\n" in text
    assert 'e_total{v="a\\\\b\\"c\\nd"} 1\n' in text
    parse(text)


def test_label_names_are_checked_on_update():
    counter = Counter("c_total", "C.", ("code",))
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(reason="x")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()
    with pytest.raises(ValueError, match="takes labels"):
        Counter("plain_total", "P.").inc(code="x")
    with pytest.raises(ValueError, match="only go up"):
        counter.inc(-1, code="x")
    with pytest.raises(ValueError, match="invalid metric name"):
        Counter("bad-name", "B.")
    with pytest.raises(ValueError, match="reserved"):
        Gauge("g", "G.", ("value",))


def test_non_string_label_values_render_as_strings_into_one_series():
    registry = Registry()
    counter = registry.register(Counter("c_total", "C.", ("code",)))
    counter.inc(code=1)
    counter.inc(code="1")
    counter.inc(code=True)
    assert parse(registry.render()) == {'c_total{code="1"}': 2, 'c_total{code="True"}': 1}


def test_registering_a_name_twice_fails():
    registry = Registry()
    registry.register(Gauge("g", "G."))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(Counter("g", "G again."))


def test_gauge_remove_drops_the_series_and_a_later_update_starts_from_zero():
    registry = Registry()
    gauge = registry.register(Gauge("g", "G.", ("name",)))
    gauge.set(5, name="a")
    gauge.remove(name="a")
    assert 'g{name="a"}' not in registry.render()
    gauge.inc(name="a")
    assert parse(registry.render()) == {'g{name="a"}': 1}


def worker(name: str, kind: Kind = "chat", load: int = 0, capacity: int = 4,
           state: str = "ready") -> WorkerInfo:
    return WorkerInfo(name, kind, "hf", "m", capacity, load, 1, "cpu", state)


def test_set_workers_replaces_worker_gauges_and_drops_vanished_workers():
    metrics = FrontMetrics()
    metrics.set_workers([worker("chat-0", load=2), worker("tool-0", "tool", capacity=32),
                         worker("chat-1", state="draining")], queued=3)
    samples = parse(metrics.render())
    assert samples['textserve_worker_load{name="chat-0",kind="chat"}'] == 2
    assert samples['textserve_worker_capacity{name="tool-0",kind="tool"}'] == 32
    assert samples['textserve_worker_ready{name="chat-0",kind="chat"}'] == 1
    assert samples['textserve_worker_ready{name="chat-1",kind="chat"}'] == 0
    assert samples["textserve_broker_queued"] == 3

    metrics.set_workers([worker("chat-1", load=1)], queued=0)
    workers = {key: value for key, value in parse(metrics.render()).items()
               if key.startswith("textserve_worker_")}
    assert workers == {
        'textserve_worker_load{name="chat-1",kind="chat"}': 1,
        'textserve_worker_capacity{name="chat-1",kind="chat"}': 4,
        'textserve_worker_ready{name="chat-1",kind="chat"}': 1,
    }
    metrics.set_workers([], queued=0)
    assert "textserve_worker_load{" not in metrics.render()
    assert "# TYPE textserve_worker_load gauge\n" in metrics.render()


def test_set_workers_merges_two_entries_with_one_name_and_kind():
    metrics = FrontMetrics()
    metrics.set_workers([worker("chat-0", load=1, state="draining"), worker("chat-0", load=2)], 0)
    samples = parse(metrics.render())
    assert samples['textserve_worker_load{name="chat-0",kind="chat"}'] == 3
    assert samples['textserve_worker_capacity{name="chat-0",kind="chat"}'] == 8
    assert samples['textserve_worker_ready{name="chat-0",kind="chat"}'] == 1


def test_front_metrics_declares_every_metric_and_parses_line_by_line():
    metrics = FrontMetrics()
    metrics.connections_total.inc()
    metrics.connections_active.inc()
    metrics.connections_rejected_total.inc(reason="auth")
    metrics.turns_total.inc(deploy_mode="both", protocol="yap")
    metrics.turns_ended_total.inc(outcome="done", protocol="openai_chat")
    metrics.errors_total.inc(code="chat_prompt_too_long", protocol="yap")
    metrics.cancels_total.inc()
    metrics.tokens_streamed_total.inc(7)
    metrics.ttft_seconds.observe(0.042, protocol="yap")
    metrics.toolcall_latency_seconds.observe(0.003)
    metrics.turn_duration_seconds.observe(1.2)
    text = metrics.render()
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert types == {
        "textserve_connections_active": "gauge",
        "textserve_connections_total": "counter",
        "textserve_connections_rejected_total": "counter",
        "textserve_turns_total": "counter",
        "textserve_turns_ended_total": "counter",
        "textserve_errors_total": "counter",
        "textserve_cancels_total": "counter",
        "textserve_tokens_streamed_total": "counter",
        "textserve_ttft_seconds": "histogram",
        "textserve_toolcall_latency_seconds": "histogram",
        "textserve_turn_duration_seconds": "histogram",
        "textserve_worker_load": "gauge",
        "textserve_worker_capacity": "gauge",
        "textserve_worker_ready": "gauge",
        "textserve_broker_queued": "gauge",
    }
    samples = parse(text)
    assert samples["textserve_tokens_streamed_total"] == 7
    assert samples['textserve_turns_ended_total{outcome="done",protocol="openai_chat"}'] == 1
    assert samples['textserve_turns_ended_total{outcome="done",protocol="yap"}'] == 0
    # pre-created
    assert samples['textserve_turns_ended_total{outcome="cancelled",protocol="yap"}'] == 0
    assert samples['textserve_ttft_seconds_bucket{protocol="yap",le="0.001"}'] == 0
    assert samples['textserve_ttft_seconds_bucket{protocol="yap",le="0.05"}'] == 1
    assert samples['textserve_ttft_seconds_bucket{protocol="yap",le="10.0"}'] == 1
    assert samples['textserve_ttft_seconds_count{protocol="yap"}'] == 1


def test_repeated_updates_hit_the_cached_series_without_revalidating():
    # Guards the hot path against regressions to per-call validation or escaping.
    counter = Counter("c_total", "C.", ("code",))
    hist = Histogram("h", "H.", (0.001, 0.01, 0.1, 1, 10), ("kind",))
    counter.inc(code="x")
    hist.observe(0.5, kind="chat")
    assert len(counter._fast) == 1 and len(hist._fast) == 1
    for _ in range(1000):
        counter.inc(code="x")
        hist.observe(0.5, kind="chat")
    assert len(counter._fast) == 1 and len(hist._fast) == 1
