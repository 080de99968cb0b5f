"""``gender``: one session that switches the assistant's gender every turn (woman, man, ...)
in one personality (``--personality``, else the server's default), while the conversation
history carries on. Needs a chat model."""

from __future__ import annotations

import argparse

from . import switch
from .connection import ClientSettings
from .personas import gender_cycle

NAME = "gender"
HELP = "switch the assistant's gender turn by turn, keeping the history"
add_arguments = switch.add_arguments


async def run(args: argparse.Namespace, settings: ClientSettings) -> int:
    cycle = gender_cycle(args.switches + 1, settings.personality)
    return await switch.run_switches(NAME, args, settings, cycle)
