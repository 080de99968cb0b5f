"""The broker's settings: one Struct, filled from ``[broker]`` of supervisor.toml or flags."""

from __future__ import annotations

import msgspec


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    frontend: str = ""  # ROUTER the fronts connect to; the supervisor fills it from run_dir
    backend: str = ""  # ROUTER the workers connect to
    # ROUTER the supervisor connects to (worker exits, drains, status); the supervisor sets it
    # to ipc://RUN_DIR/broker.ipc. Empty: a broker run alone has no control socket.
    control: str = ""
    heartbeat_interval_s: float = 0.25
    # Missed heartbeat intervals before a worker or front is dropped (3 s). A crash does not
    # wait for this (the supervisor reports exits at once); it covers hangs, and must not
    # call a process lost that was only starved of CPU for a moment.
    liveness: int = 12
    queue_max: int = 256  # turns waiting for a worker, over all kinds
    queue_timeout_s: float = 10.0  # a queued turn fails with queue_timeout after this
    # A keys directory (broker/curve.py): its tcp:// endpoints are then CurveZMQ servers that
    # let in only the clients whose public keys are in it. ipc:// endpoints are not affected
    # (the run dir's permissions guard them). The supervisor fills it for tcp:// endpoints.
    curve_dir: str = ""
