"""The WebSocket front's settings: one Struct, from ``[wsfront]`` of supervisor.toml or env."""

from __future__ import annotations

from typing import Literal

import msgspec

from pipeline import Bound, SamplingBounds


YAP_SAMPLING_RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 1.2), "top_p": (0.6, 1.0), "top_k": (0, 60), "min_p": (0.0, 0.20),
    "repetition_penalty": (1.0, 1.3), "presence_penalty": (0.0, 0.5),
    "frequency_penalty": (0.0, 0.5),
}


class FrontConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    broker: str = ""  # broker frontend endpoint; the supervisor fills it
    # A client key bundle (broker/curve.py) for a tcp:// broker that speaks CurveZMQ; "" = none.
    curve_dir: str = ""
    host: str = "0.0.0.0"
    port: int = 8000  # env WS_PORT
    # Front processes sharing the port (SO_REUSEPORT: the kernel spreads new connections
    # over them); each is its own child of the supervisor, wsfront-0, wsfront-1, ... when
    # more than one. Env WS_FRONT_PROCESSES.
    processes: int = 1
    api_key: str = ""  # env TEXT_API_KEY; the front refuses to start without it
    deploy_mode: Literal["both", "chat", "tool"] = "both"  # the supervisor derives it from [[workers]]
    chat_max_out: int = 200  # env CHAT_MAX_OUT: max tokens per reply
    concurrent_model_call: bool = False  # env CONCURRENT_MODEL_CALL=1: start chat and tool at once
    # Both from the broker's [broker] settings (the supervisor hands them down): a broker
    # silent for heartbeat_liveness intervals has lost the turns in flight (worker_lost).
    heartbeat_interval_s: float = 0.25
    heartbeat_liveness: int = 12
    max_message_bytes: int = 65536  # a bigger client frame is refused and the connection closed
    # Frames waiting for a client that stopped reading, beyond what the kernel and websockets
    # buffer; past this the turn is cancelled and the connection closed (1008). Env
    # WS_MAX_SEND_QUEUE_BYTES.
    max_send_queue_bytes: int = 1 << 20
    # SO_SNDBUF of client sockets; 0 keeps the OS default (autotuned up to tcp_wmem, 4 MiB on
    # Linux). Smaller means a stalled client is noticed, and the queue bound bites, sooner.
    # Env WS_SOCKET_SEND_BUFFER_BYTES.
    socket_send_buffer_bytes: int = 0
    cancel_sentinel: str = "__CANCEL__"  # env WS_CANCEL_SENTINEL
    end_sentinel: str = "__END__"  # env WS_END_SENTINEL
    # connection guards (docs/protocol.md); a rate limit or window of 0 disables that limit
    max_connections: int = 64  # env MAX_CONCURRENT_CONNECTIONS
    handshake_acquire_timeout_s: float = 0.5  # env WS_HANDSHAKE_ACQUIRE_TIMEOUT_S
    idle_timeout_s: float = 150.0  # env WS_IDLE_TIMEOUT_S; 0 disables
    idle_close_code: int = 4000  # env WS_CLOSE_IDLE_CODE: the close code of an idle connection
    max_messages_per_window: int = 200  # env WS_MAX_MESSAGES_PER_WINDOW
    message_window_s: float = 10.0  # env WS_MESSAGE_WINDOW_SECONDS
    max_cancels_per_window: int = 50  # env WS_MAX_CANCELS_PER_WINDOW
    cancel_window_s: float = 10.0  # env WS_CANCEL_WINDOW_SECONDS
    persona_updates_per_window: int = 10  # env CHAT_PROMPT_UPDATE_MAX_PER_WINDOW (per session)
    persona_update_window_s: float = 60.0  # env CHAT_PROMPT_UPDATE_WINDOW_SECONDS
    # The tool the tool model stands for: toolcall frames name it, OpenAI requests declare it.
    screenshot_tool_name: str = "take_screenshot"
    # Ranges of the client's sampling knobs on /ws: (low, high) each, both ends included;
    # those of the single-process Yap server by default. Env CHAT_TEMPERATURE_MIN / _MAX, ...
    sampling_ranges: dict[str, tuple[float, float]] = msgspec.field(
        default_factory=lambda: dict(YAP_SAMPLING_RANGES))

    def sampling_bounds(self) -> SamplingBounds:
        """The ranges on /ws: the configured ones, the Yap server's for knobs left out."""
        ranges = {**YAP_SAMPLING_RANGES, **self.sampling_ranges}
        return SamplingBounds(**{key: Bound(*ranges[key]) for key in SamplingBounds.__dataclass_fields__})
