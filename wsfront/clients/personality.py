"""``personality``: one session that switches personality style every turn (flirty, savage,
religious, delulu, spiritual, round again), alternating the assistant's gender unless
``--gender`` fixes it, while the conversation history carries on. Needs a chat model."""

from __future__ import annotations

import argparse

from . import switch
from .connection import ClientSettings
from .personas import personality_cycle

NAME = "personality"
HELP = "switch personality styles turn by turn, keeping the history"
add_arguments = switch.add_arguments


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    cycle = personality_cycle(args.switches + 1, settings.gender)
    return await switch.run_switches(NAME, args, settings, cycle)
