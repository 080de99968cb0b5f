"""The Yap session without sockets, fuzzed (hypothesis): tens of thousands of random client
messages, valid and broken, interleaved with broker frames for the requests the session
submitted (late ones and duplicate finals too). Whatever arrives, the session never raises and
what it sends keeps the protocol's promises, checked on the encoded wire frames:

- every ``ack`` is followed by exactly one terminal (``done`` or ``error`` naming it), before
  the next ``ack`` or the close; nothing of a turn comes after its terminal;
- with a tool model the ``toolcall`` comes before any ``token``; ``final`` is the tokens' text;
- a frame for a request that already ended (late, or a duplicate final) sends nothing;
- when a turn ends, and when the session closes, every request it submitted has ended or was
  cancelled by id; every ``error`` frame has an ``error_code`` and a ``message``.
"""

from __future__ import annotations

import json
import random
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import frames
from pipeline import SAMPLING_KEYS
from wsfront.config import FrontConfig
from wsfront.limits import KeyedWindows
from wsfront.turns import ToBroker
from wsfront.yap import CloseClient, SendClient, YapSession
from wsfront.yap_frames import encode_server

MAX_MESSAGE_BYTES = 4096  # small, so that oversized frames are cheap to make
EXAMPLES = 30  # per deployment, each of MIN_STEPS to MAX_STEPS client messages and broker frames
MIN_STEPS, MAX_STEPS = 400, 800
TURN_FRAMES = {"toolcall", "token", "final"}
SERVER_TYPES = {"ack", "toolcall", "token", "final", "done", "error", "pong", "warmed",
                "connection_closed"}

# ---------------------------------------------------------------- client messages

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                      st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


def mostly(good: st.SearchStrategy) -> st.SearchStrategy:
    """The right type three times in four, anything else otherwise."""
    return st.one_of(good, good, good, json_value)


request_ids = st.one_of(st.sampled_from(["r1", "r2", "r3", "", " ", "x" * 300]),
                        st.integers(-3, 3), st.integers(), st.booleans())
session_ids = st.sampled_from(["s1", "s2", "", "   ", "y" * 300])
utterances = st.one_of(st.sampled_from(["hello there", "take a screenshot", "", "  ", "é你😀"]),
                       st.text(max_size=30))
knob_values = st.one_of(st.floats(-1, 2), st.integers(-5, 100), st.sampled_from([
    0.0, 0.2, 0.7, 1.0, 1.2, 1.3, 0.6, 60, 61, 0.5, 0.51, True, False, None, "hot", 1e308]),
    json_value)
sampling_objects = st.dictionaries(st.sampled_from([*SAMPLING_KEYS, "speak_numbers", "bogus"]),
                                   knob_values, max_size=4)
persona_fields = {
    "persona_style": mostly(st.sampled_from(["nerdy", "savage", "calm", "evil", "", "NERDY"])),
    "personality": mostly(st.sampled_from(["nerdy", "savage"])),
    "gender": mostly(st.sampled_from(["woman", "male", "robot", "man", ""])),
    "assistant_gender": mostly(st.sampled_from(["female", "man"])),
    "user_identity": mostly(st.sampled_from(["man", "woman", "child", ""])),
    "chat_prompt": mostly(st.sampled_from(["You are a pirate.", "You are a robot.", ""])),
    "persona_text": mostly(st.text(max_size=20)),
    "runtime_text": mostly(st.text(max_size=20)),
    "temperature": knob_values,
    "top_k": knob_values,
}
start_frames = st.fixed_dictionaries(
    {"type": st.just("start"), "session_id": mostly(session_ids),
     "user_utterance": mostly(utterances)},
    optional={"request_id": request_ids, "history_text": mostly(st.text(max_size=30)),
              "sampling": mostly(sampling_objects), "sampling_params": mostly(sampling_objects),
              **persona_fields})
warm_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["warm_persona", "warm_history"])},
    optional={"session_id": mostly(session_ids), "history_text": mostly(st.text(max_size=30)),
              **persona_fields})
cancel_frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("cancel")}, optional={"request_id": request_ids}),
    st.fixed_dictionaries({"cancel": st.just(True)}, optional={"request_id": request_ids}),
    st.fixed_dictionaries({"cancel": json_value}))
other_frames = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["ping", "pong", "end"])},
                          optional={"extra": json_value}),
    st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["dance", "", "START"]), json_value)},
                          optional={"session_id": json_value}))


def as_wire(msg: Any, form: int) -> str | bytes:
    text = json.dumps(msg, ensure_ascii=form % 2 == 0)
    return text.encode() if form % 3 == 0 else text


def encoded(objects: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(as_wire, objects, st.integers(0, 5))


client_messages = st.one_of(
    encoded(start_frames), encoded(start_frames), encoded(start_frames),
    encoded(cancel_frames), encoded(warm_frames), encoded(other_frames),
    encoded(json_value),  # JSON, mostly not an object
    st.sampled_from(["__CANCEL__", " __CANCEL__\n", "__END__", '{"cancel": true}', "{}", "[]",
                     "null", '"start"', "{not json", '{"type": "ping"}', '{"type": "cancel"}']),
    st.text(max_size=30),
    st.binary(max_size=12).map(lambda b: b"\xff" + b),  # never UTF-8
    st.integers(1, 3).map(lambda k: json.dumps(
        {"type": "start", "session_id": "s1", "user_utterance": "x" * (MAX_MESSAGE_BYTES * k)})),
    st.just(json.dumps({"type": "ping", "pad": "é" * (MAX_MESSAGE_BYTES // 2 + 1)})),
)

# ---------------------------------------------------------------- broker frames

words = st.one_of(st.sampled_from(["Hi", " there", "*waves*", " $3.50", " 12:30", " 50%", "\n",
                                   " **bold**", " 1st", " 4155550132", "", " 😀"]),
                  st.text(max_size=8))
# The broker always says why a request failed: its messages are never empty.
failures = st.sampled_from(["worker chat-0 exited", "no chat worker within 30s"])
worker_codes = st.sampled_from(get_args(frames.WorkerCode) + ("something_new",))
chat_frames = st.one_of(
    st.tuples(st.just("delta"), words, st.integers(0, 4)),
    st.tuples(st.just("delta"), words, st.integers(0, 4)),
    st.tuples(st.just("delta"), words, st.integers(0, 4)),
    st.tuples(st.just("finished"), st.sampled_from(get_args(frames.FinishReason)), worker_codes,
              st.sampled_from(["", "it broke"]), st.integers(0, 5000)),
    st.tuples(st.just("failed"), st.sampled_from(get_args(frames.FailCode)), failures))
tool_frames = st.one_of(
    st.tuples(st.just("tool"), st.sampled_from(["screenshot", "none", "yes", ""]),
              st.floats(0, 1), st.booleans(), st.just("stop"), st.just("")),
    st.tuples(st.just("tool"), st.just("none"), st.floats(0, 1), st.booleans(),
              st.sampled_from(get_args(frames.FinishReason)), worker_codes),
    st.tuples(st.just("failed"), st.sampled_from(get_args(frames.FailCode)), failures))


BrokerFrame = frames.Delta | frames.Finished | frames.ToolResult | frames.Failed


def broker_frame(rid: str, spec: tuple) -> BrokerFrame:
    kind = spec[0]
    if kind == "delta":
        return frames.Delta(rid, spec[1], spec[2])
    if kind == "finished":
        return frames.Finished(rid, spec[1], spec[4], spec[4] // 2, spec[2], spec[3], spec[4] // 3)
    if kind == "tool":
        return frames.ToolResult(rid, spec[1], spec[2], spec[3], spec[4], spec[5])
    return frames.Failed(rid, spec[1], spec[2])


# Each example draws a small catalogue of messages and frames, and a schedule as bytes: two
# bytes a step say what comes next and which entry. Drawing every step as a structure would
# cost hypothesis a millisecond a step; a byte string is one draw, and still shrinks (to
# fewer steps, and towards the catalogue's first entries).
BASICS = [json.dumps({"type": "start", "session_id": "s1", "user_utterance": "hello there"}),
          json.dumps({"type": "start", "session_id": "s1", "user_utterance": "take a screenshot",
                      "request_id": "r1"}),
          "__CANCEL__", '{"type": "cancel"}']
catalogues = st.tuples(st.lists(client_messages, min_size=4, max_size=12),
                       st.lists(chat_frames, min_size=3, max_size=8),
                       st.lists(tool_frames, min_size=2, max_size=4))
schedules = st.binary(min_size=2 * MIN_STEPS, max_size=2 * MAX_STEPS)
# XORed into every schedule: hypothesis favours runs of equal bytes (all zeros first), which
# would make one step over and over; through the mask they make a mixed schedule.
MASK = random.Random(11).randbytes(2 * MAX_STEPS)
CLOCK_STEPS = [0.0, 0.0, 0.02, 0.05, 0.1, 0.1, 0.5, 3.0, 70.0]


# ---------------------------------------------------------------- the wire checker


class Connection:
    """One session and what its wire output has shown so far: the turn the client was last
    acked, the requests submitted for it and for warm-ups, and which of those ended."""

    def __init__(self, config: FrontConfig, name: str, personas: KeyedWindows) -> None:
        self.session = YapSession(config, name, personas)
        self.mode = config.deploy_mode
        self.open: str | None = None  # the acked turn without a terminal yet
        self.turn_rids: set[str] = set()  # its requests
        self.tokens: list[str] = []
        self.toolcall = False
        self.final = False
        self.submitted: dict[str, str] = {}  # request id -> "chat" | "tool"
        # A final frame from the broker, or a Cancel from us (a dict: ordered, so that an
        # example replays the same whatever the hash seed).
        self.ended: dict[str, None] = {}
        self.closed = False

    def live(self) -> list[str]:
        return [rid for rid in self.submitted if rid not in self.ended]

    def stale(self) -> list[str]:
        return list(self.ended)

    # ---------------------------------------------------------- feeding

    def client(self, raw: str | bytes, now: float) -> None:
        self.check(self.session.on_client(raw, now), "client")

    def broker(self, pick: int, chat_spec: tuple, tool_spec: tuple) -> bool:
        stale = pick % 8 == 0
        pool = (self.stale() if stale else self.live()) or self.live() or self.stale()
        if not pool:
            return False
        rid = pool[pick % len(pool)]
        late = rid in self.ended
        spec = tool_spec if self.submitted[rid] == "tool" else chat_spec
        frame = broker_frame(rid, spec)
        if spec[0] != "delta":
            self.ended[rid] = None
        actions = self.session.on_broker(frame)
        if late:
            assert actions == [], (frame, actions)  # a late frame or a second final reaches nobody
        self.check(actions, "broker")
        return True

    def overflow(self) -> None:
        self.check(self.session.on_send_overflow(1 << 21), "overflow")

    def idle(self, now: float) -> None:
        self.check(self.session.on_idle(now), "idle")

    def disconnect(self) -> None:
        self.check(self.session.on_disconnect(), "disconnect")

    # ---------------------------------------------------------- checking

    def check(self, actions: list, source: str) -> None:
        for action in actions:
            assert not self.closed, f"{action} after the close"
            if type(action) is CloseClient:
                self.closed = True
                if source == "idle":
                    assert self.open is None, "an idle close while a turn runs"
                self.open = None  # the close ends the turn: nobody is left to tell
                continue
            if type(action) is ToBroker:
                self.to_broker(action.frame, source)
                continue
            assert type(action) is SendClient, action
            self.to_client(json.loads(encode_server(action.frame)), source)
        if self.session.closed:
            assert self.live() == [], f"requests neither finished nor cancelled: {self.live()}"
            self.closed = True
            self.open = None

    def to_broker(self, frame: frames.Submit | frames.Cancel, source: str) -> None:
        if type(frame) is frames.Cancel:
            assert frame.request_ids, "an empty cancel"
            for rid in frame.request_ids:
                assert rid in self.submitted and rid not in self.ended, f"cancel of {rid}"
                self.ended[rid] = None
            return
        assert frame.request_id not in self.submitted, "a request id used twice"
        job = frame.job
        kind = "tool" if type(job) is frames.ToolJob else "chat"
        self.submitted[frame.request_id] = kind
        if kind == "chat" and job.max_tokens == 0 and not job.utterance:  # a warm-up's prefill
            assert source == "client" and self.mode != "tool", frame
            return
        if self.mode != "both":
            assert kind == ("chat" if self.mode == "chat" else "tool"), frame
        elif not self.session.core.concurrent:  # the decision first, the reply once it is made
            assert kind == ("chat" if self.toolcall else "tool"), frame
        # The turn acked in this batch, or (after its tool decision) the open one.
        assert self.open is not None, frame
        self.turn_rids.add(frame.request_id)

    def ended_turn(self) -> None:
        """The open turn's terminal: its requests were cancelled before it, or had ended."""
        left = [rid for rid in self.turn_rids if rid not in self.ended]
        assert left == [], f"{self.open} ended with requests still running: {left}"
        self.open = None

    def to_client(self, f: dict, source: str) -> None:
        """One frame the client is sent."""
        kind = f["type"]
        assert kind in SERVER_TYPES, f
        rid = f.get("request_id")
        if kind == "error":
            assert isinstance(f["error_code"], str) and f["error_code"], f
            assert isinstance(f["message"], str) and f["message"], f
        if kind == "ack":
            assert source == "client" and self.open is None, f"ack {rid} while {self.open} runs"
            self.open, self.turn_rids = rid, set()
            self.tokens, self.toolcall, self.final = [], False, False
            return
        if kind in TURN_FRAMES:
            assert source == "broker" and rid == self.open and not self.final, f
            if kind == "toolcall":
                assert self.mode != "chat" and not self.toolcall, f
                assert f["status"] == ("yes" if f["raw"] else "no"), f
                self.toolcall = True
            elif kind == "token":
                assert self.mode == "chat" or self.mode == "both" and self.toolcall, f
                self.tokens.append(f["text"])
            else:
                assert self.mode != "tool" and f["text"] == "".join(self.tokens), f
                self.final = True
            return
        if kind == "done":
            if self.open is None:  # the answer to a cancel with no turn running
                assert source == "client" and f["cancelled"] is True, f
                return
            assert rid == self.open, f"done of {rid} while {self.open} runs"
            if f.get("cancelled"):
                assert source == "client", f
            else:
                assert source == "broker", f
                assert self.toolcall or self.mode == "chat", f"done of {rid} without a toolcall"
                assert self.final if self.mode != "tool" else f["usage"] == {}, f
            self.ended_turn()
        elif kind == "error" and source in ("broker", "overflow") and "target" not in f:
            assert rid == self.open, f"error of {rid} while {self.open} runs"
            if self.open is not None:
                self.ended_turn()
        # a refusal, a warm-up's answer, pong, connection_closed


# ---------------------------------------------------------------- the fuzz

DEPLOYMENTS = [(mode, concurrent) for mode in ("both", "chat", "tool")
               for concurrent in (False, True)]


# Half the examples run under tight limits, so that refusals (rate_limited, persona updates)
# come between turns as often as turns do.
TIGHT_LIMITS = {"max_messages_per_window": 8, "message_window_s": 30.0,
                "max_cancels_per_window": 2, "cancel_window_s": 30.0,
                "persona_updates_per_window": 2, "persona_update_window_s": 60.0}


@pytest.mark.parametrize("mode,concurrent", DEPLOYMENTS)
def test_random_client_messages_and_broker_frames_keep_the_wire_promises(mode, concurrent):
    configs = [FrontConfig(api_key="k", deploy_mode=mode, concurrent_model_call=concurrent,
                           max_message_bytes=MAX_MESSAGE_BYTES, **limits)
               for limits in ({}, TIGHT_LIMITS)]
    counted = {"messages": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(catalogues, schedules, st.sampled_from(configs))
    def fuzz(catalogue, schedule, config):
        messages = BASICS + catalogue[0]
        chat_specs, tool_specs = catalogue[1], catalogue[2]
        personas = KeyedWindows(config.persona_updates_per_window, config.persona_update_window_s)
        serial = 0
        conn = Connection(config, f"c{serial}", personas)
        now = 0.0
        for i in range(0, len(schedule) - 1, 2):
            what, which = schedule[i] ^ MASK[i], schedule[i + 1] ^ MASK[i + 1]
            if conn.closed:  # the client comes back on a new connection
                serial += 1
                conn = Connection(config, f"c{serial}", personas)
            if what < 40:
                now += CLOCK_STEPS[what % len(CLOCK_STEPS)]
                conn.client(messages[which % len(messages)], now)
            elif what < 252:
                if not conn.broker(which, chat_specs[what % len(chat_specs)],
                                   tool_specs[what % len(tool_specs)]):
                    continue
            elif what < 254:
                now += 200.0
                conn.idle(now)
            elif what == 254:
                conn.overflow()
            else:
                conn.disconnect()
            counted["messages"] += 1
        conn.disconnect()

    fuzz()
    assert counted["messages"] > MIN_STEPS * EXAMPLES // 3  # the schedules were not cut short
