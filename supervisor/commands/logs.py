"""``logs NAME [-n N] [-f]``: the last lines of one process's log, optionally followed (like
``supervisorctl tail``). Works whether or not the stack runs. Exit 0, or 1 if there is no
such log."""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from pathlib import Path

from supervisor.rundir import RunDir

POLL_S = 0.2


def run(run_dir: RunDir, name: str, *, lines: int, follow: bool) -> int:
    path = run_dir.log(name)
    if os.sep in name or name.startswith(".") or not path.is_file():
        known = sorted(p.stem for p in run_dir.logs.glob("*.log")) if run_dir.logs.is_dir() else []
        print(f"error: no log for {name!r} in {run_dir.logs}"
              + (f" (known: {', '.join(known)})" if known else ""), file=sys.stderr)
        return 1
    with open(path, "rb") as f:
        for line in deque(f, maxlen=lines) if lines > 0 else ():
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        if not follow:
            return 0
        try:
            _follow(path, f)
        except KeyboardInterrupt:
            pass
    return 0


def _follow(path: Path, f) -> None:  # type: ignore[no-untyped-def]
    """Print what is appended; reopen when the supervisor rotates or truncates the log."""
    inode = os.fstat(f.fileno()).st_ino
    while True:
        chunk = f.read()
        if chunk:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            continue
        time.sleep(POLL_S)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_ino != inode or st.st_size < f.tell():
            f.close()
            f = open(path, "rb")
            inode = os.fstat(f.fileno()).st_ino
