"""What the ``live`` client keeps between turns, apart from its I/O: the transcript, the
persona presets (built in, then a ``--persona-file`` over them) and the current one, and its
slash commands. The persona file is read again on ``/reload``, and before a turn whenever it
changed on disk, so that a persona can be edited while the session goes on."""

from __future__ import annotations

from pathlib import Path

from .connection import ClientFailure
from .personas import BUILTIN_PRESETS, PersonaPreset, load_persona_file
from .turn import with_exchange

COMMANDS = ("/persona NAME", "/personas", "/reload", "/history", "/reset", "/cancel", "/quit",
            "/help")


class LiveState:
    def __init__(self, persona_name: str | None = None, persona_file: Path | None = None,
                 switching: bool = True) -> None:
        self.persona_file = persona_file
        self.switching = switching  # False with --no-chat-prompt: no persona is ever sent
        self.history = ""
        self._seen: bytes | None = None  # the persona file as last read
        self.presets = self._read()
        self.persona_name = persona_name
        self.persona: PersonaPreset | None = None  # None: the flags' (or server's) persona
        if persona_name is not None:
            if persona_name not in self.presets:
                raise ClientFailure(f"unknown persona {persona_name!r}; known: {self.names()}")
            self.persona = self.presets[persona_name]

    def names(self) -> str:
        return ", ".join(sorted(self.presets))

    def persona_fields(self) -> dict[str, str] | None:
        """The persona of the next ``start``; None leaves it to the flags and env."""
        if not self.switching or self.persona is None:
            return None
        return self.persona.fields()

    def describe(self) -> str:
        if not self.switching:
            return "no persona sent (--no-chat-prompt)"
        if self.persona is None:
            return "persona from flags/env"
        return f"persona {self.persona_name} ({self.persona.describe()})"

    def record(self, user: str, reply: str) -> None:
        self.history = with_exchange(self.history, user, reply)

    def command(self, text: str) -> str | None:
        """Carry out a slash command and say what it did; None when ``text`` is no command
        this class knows (a turn, or ``/cancel`` / ``/quit`` for the shell)."""
        word, _, arg = text.partition(" ")
        arg = arg.strip()
        if word == "/persona":
            return self._switch(arg)
        if word == "/personas":
            current = self.persona_name if self.persona is not None else "-"
            return f"(personas: {self.names()}; current: {current})"
        if word == "/reload":
            return self.reload(force=True)
        if word == "/history":
            return f"(history, {len(self.history)} chars)\n{self.history}".rstrip()
        if word == "/reset":
            self.history = ""
            return "(history cleared)"
        if word == "/help":
            return f"(commands: {', '.join(COMMANDS)})"
        if word.startswith("/") and word not in ("/cancel", "/quit"):
            return f"(unknown command {word}; /help lists them)"
        return None

    def reload(self, force: bool = False) -> str | None:
        """Re-read the persona file if it changed (or ``force``); what happened, or None."""
        if self.persona_file is None:
            return "(no --persona-file to reload)" if force else None
        if not force and self._file_bytes() == self._seen:
            return None
        try:
            presets = self._read()
        except ClientFailure as exc:
            return f"(reload failed, keeping the personas I had: {exc})"
        self.presets = presets
        note = ""
        if self.persona is not None and self.persona_name in presets:
            changed = presets[self.persona_name] != self.persona
            self.persona = presets[self.persona_name]
            note = f"; {self.persona_name} {'changed' if changed else 'unchanged'}"
        return f"(reloaded {self.persona_file}: {len(presets)} personas{note})"

    def _switch(self, name: str) -> str:
        if not self.switching:
            return "(persona switches are off with --no-chat-prompt)"
        if not name:
            return f"(usage: /persona NAME; known: {self.names()})"
        self.reload()  # the file may have gained the persona asked for
        if name not in self.presets:
            return f"(unknown persona {name!r}; known: {self.names()})"
        self.persona_name, self.persona = name, self.presets[name]
        return f"(now {self.describe()}; the history carries on)"

    def _read(self) -> dict[str, PersonaPreset]:
        if self.persona_file is None:
            return dict(BUILTIN_PRESETS)
        self._seen = self._file_bytes()
        return {**BUILTIN_PRESETS, **load_persona_file(self.persona_file)}

    def _file_bytes(self) -> bytes | None:
        # The content, not the mtime: two saves within the clock's tick would share an mtime.
        assert self.persona_file is not None
        try:
            return self.persona_file.read_bytes()
        except OSError:
            return None
