"""Test clients for the WebSocket front: ``python -m wsfront.clients <name> [options]``.

One module per client (warmup, bench, live, conversation, tool, personality, gender,
screen_analysis); ``connection`` owns the settings, URL and WebSocket link, ``sampling`` the
sampling flags, ``turn`` the turn loop, its timings and the history, ``personas`` the presets
and switch orders.
"""

from .connection import ClientFailure, ClientSettings, Link, ServerError
from .turn import TurnRecorder, TurnResult, percentile, run_turn, start_frame

__all__ = ["ClientFailure", "ClientSettings", "Link", "ServerError", "TurnRecorder", "TurnResult",
           "percentile", "run_turn", "start_frame"]
