"""Parsing a client's prior transcript ("User: ...\nAssistant: ...") into chat messages."""

from __future__ import annotations

import re
from typing import Final

_ROLES: Final = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant",
                 "bot": "assistant"}
_SPEAKER_LINE = re.compile(r"\s*(user|human|assistant|ai|bot)\s*:[ \t]?(.*)", re.IGNORECASE)


def parse_history(history_text: str) -> list[dict[str, str]]:
    """Turn a transcript into `{"role", "content"}` messages, oldest first.

    A line starting with `User:`/`Human:` or `Assistant:`/`AI:`/`Bot:` (any case) opens a
    turn; other lines continue the current turn. Text before the first prefix (or a
    transcript with no prefixes at all) is user speech. Empty turns are dropped and
    consecutive turns of one role are merged, because many chat templates insist that
    user and assistant alternate.
    """
    turns: list[tuple[str, list[str]]] = []
    for line in history_text.splitlines():
        m = _SPEAKER_LINE.fullmatch(line)
        if m is not None:
            turns.append((_ROLES[m.group(1).lower()], [m.group(2)]))
        elif turns:
            turns[-1][1].append(line)
        else:
            turns.append(("user", [line]))
    messages: list[dict[str, str]] = []
    for role, lines in turns:
        content = "\n".join(lines).strip()
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n" + content
        else:
            messages.append({"role": role, "content": content})
    return messages
