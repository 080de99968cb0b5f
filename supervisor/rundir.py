"""The layout of a run dir: pid file, control socket, logs and child configs in one place."""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import ipc_endpoint


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def pid_file(self) -> Path:
        return self.path / "supervisor.pid"

    @property
    def control_socket(self) -> Path:
        return self.path / "control.ipc"

    @property
    def control_endpoint(self) -> str:
        return ipc_endpoint(self.path, "control.ipc")

    @property
    def broker_control_endpoint(self) -> str:
        """The broker's control socket: only the supervisor connects there."""
        return ipc_endpoint(self.path, "broker.ipc")

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def conf(self) -> Path:
        return self.path / "conf"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def child_config(self, name: str) -> Path:
        return self.conf / f"{name}.json"

    def create(self) -> None:
        """Owner-only: the child configs hold the API key and the sockets accept commands.

        A shared directory given as the run dir (sticky like /tmp, or someone else's) keeps its
        mode; logs/ and conf/ inside it are still private."""
        for d in (self.path, self.logs, self.conf):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = d.stat()
            if not st.st_mode & stat.S_ISVTX and st.st_uid == os.getuid():
                os.chmod(d, 0o700)

    def write_child_config(self, name: str, data: bytes) -> None:
        """Mode 0600 from the first byte: the child configs hold the API key."""
        fd = os.open(self.child_config(name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # it may have existed with looser bits
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    def remove_sockets(self, endpoints: Iterable[str]) -> None:
        """The control socket, and those of ``endpoints`` that are ipc files in this run dir."""
        self.control_socket.unlink(missing_ok=True)
        for endpoint in endpoints:
            if endpoint.startswith("ipc://"):
                path = Path(endpoint[len("ipc://"):])
                if path.parent == self.path:
                    path.unlink(missing_ok=True)

    def live_pid(self) -> int | None:
        """The pid of the supervisor holding this run dir, or None (no pid file, or a stale one).

        The daemon holds an exclusive flock on its pid file for its whole life, so a pid file
        left by a SIGKILLed supervisor (or a reused pid) never reads as live."""
        try:
            fd = os.open(self.pid_file, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class PidFileLock:
    """The daemon's claim on a run dir: an flock'ed pid file, released when the process dies."""

    def __init__(self, run_dir: RunDir) -> None:
        self.path = run_dir.pid_file
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
