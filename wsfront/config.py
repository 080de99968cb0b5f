"""The WebSocket front's settings: one Struct, from ``[wsfront]`` of supervisor.toml or env."""

from __future__ import annotations

from typing import Literal

import msgspec


class FrontConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    broker: str = ""  # broker frontend endpoint; the supervisor fills it
    host: str = "0.0.0.0"
    port: int = 8000  # env WS_PORT
    api_key: str = ""  # env TEXT_API_KEY; the front refuses to start without it
    deploy_mode: Literal["both", "chat", "tool"] = "both"  # the supervisor derives it from [[workers]]
    chat_max_out: int = 200  # env CHAT_MAX_OUT: max tokens per reply
    concurrent_model_call: bool = False  # env CONCURRENT_MODEL_CALL=1: start chat and tool at once
    heartbeat_interval_s: float = 0.25
    max_message_bytes: int = 65536  # a bigger client frame is refused and the connection closed
    cancel_sentinel: str = "__CANCEL__"  # env WS_CANCEL_SENTINEL
    end_sentinel: str = "__END__"  # env WS_END_SENTINEL
