"""Test clients for the WebSocket front: ``python -m wsfront.clients <name> [options]``.

One module per client (warmup, bench, live, conversation, tool); ``connection`` owns the
settings, URL and WebSocket link, ``turn`` the turn loop and its timings.
"""

from .connection import ClientFailure, ClientSettings, Link
from .turn import TurnRecorder, TurnResult, percentile, run_turn, start_frame

__all__ = ["ClientFailure", "ClientSettings", "Link", "TurnRecorder", "TurnResult", "percentile",
           "run_turn", "start_frame"]
