"""How a command tells an operator what went wrong: one line, then the log lines that explain it."""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor.process import tail


def failure(reason: str, log_path: Path | None = None, lines: int = 20) -> None:
    print(f"error: {reason}", file=sys.stderr)
    if log_path is None:
        return
    last = tail(log_path, lines)
    if last:
        print(f"--- last {len(last)} lines of {log_path} ---", file=sys.stderr)
        for line in last:
            print(f"  {line}", file=sys.stderr)
