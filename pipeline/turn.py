"""The turn plan: which models a user turn needs and when chat may start and stream."""

from __future__ import annotations

from typing import Final, Literal

DeployMode = Literal["both", "chat", "tool"]
DEPLOY_MODES: Final = ("both", "chat", "tool")


class TurnPlan:
    """How one user turn runs, for one deployment mode; make a new plan per turn.

    With both models the tool decision reaches the client first. Sequential mode submits
    chat once the tool answered; concurrent mode submits both at once (lower latency,
    wasted chat work if the turn is cancelled) and holds chat tokens until the toolcall
    frame is out.
    """

    def __init__(self, deploy_mode: DeployMode, concurrent: bool) -> None:
        if deploy_mode not in DEPLOY_MODES:
            raise ValueError(f"deploy_mode must be one of {DEPLOY_MODES}, got {deploy_mode!r}")
        self.deploy_mode = deploy_mode
        self.concurrent = concurrent
        self._chat_submitted = False

    @property
    def needs_tool(self) -> bool:
        return self.deploy_mode in ("both", "tool")

    @property
    def needs_chat(self) -> bool:
        return self.deploy_mode in ("both", "chat")

    @property
    def start_chat_with_tool(self) -> bool:
        """Chat is submitted together with the tool request at turn start."""
        return self.needs_tool and self.needs_chat and self.concurrent

    @property
    def chat_submitted(self) -> bool:
        return self._chat_submitted

    def initial_submissions(self) -> tuple[str, ...]:
        """The request kinds to submit when the turn starts, tool first."""
        kinds: list[str] = []
        if self.needs_tool:
            kinds.append("tool")
        if self.needs_chat and (self.start_chat_with_tool or not self.needs_tool):
            kinds.append("chat")
            self._chat_submitted = True
        return tuple(kinds)

    def on_tool_result(self) -> bool:
        """The tool answered (yes or no: chat follows either way); True once if chat is
        to be submitted now."""
        if not self.needs_chat or self._chat_submitted:
            return False
        self._chat_submitted = True
        return True

    def may_stream_chat(self, tool_done: bool) -> bool:
        """No chat token reaches the client before the toolcall frame when a tool model runs."""
        return tool_done or not self.needs_tool
