"""``start`` echoes what starting workers log about building their builtin models."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.commands.start import BuildProgress


def test_build_lines_of_this_start_are_echoed_once_and_old_or_half_lines_wait(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "tool-0.log"
    log.write_text("t INFO workers.builtin_models: builtin:x: an earlier run's line\n")
    progress = BuildProgress.after(tmp_path)
    with open(log, "a") as f:
        f.write("t INFO workers: loading\n")
        f.write("t INFO workers.builtin_models: builtin:x: epoch 1/4: loss 0.4, 47 s\n")
        f.write("t INFO workers.builtin_models: builtin:x: epo")  # still being written
    progress.show([("tool-0", log)])
    progress.show([("tool-0", log)])  # nothing new
    with open(log, "a") as f:
        f.write("ch 2/4\n")
    progress.show([("tool-0", log), ("chat-0", tmp_path / "missing.log")])
    assert capsys.readouterr().err.splitlines() == [
        "  tool-0: builtin:x: epoch 1/4: loss 0.4, 47 s", "  tool-0: builtin:x: epoch 2/4"]
