"""One child process: spawn in its own process group, signal the whole group, reap, rotate its log.

The child's stdout and stderr are appended to its log file by the kernel (no pipe through the
supervisor), so rotation renames the file when no process writes it (at spawn) and otherwise
copies and truncates it (the child's O_APPEND descriptor then writes at the new end).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


def child_env(base: Mapping[str, str], *, cuda_visible_devices: str | None = None) -> dict[str, str]:
    """The env a child runs with: ours first on PYTHONPATH, so ``python -m broker`` (and
    ``python -m supervisor``, which PyPI's supervisord also names) is always this repo's."""
    env = dict(base)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *rest])
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the file as they happen
    if env.get("HUGGINGFACE_HUB_TOKEN") and not env.get("HF_TOKEN"):
        env["HF_TOKEN"] = env["HUGGINGFACE_HUB_TOKEN"]  # the older name, still accepted
    if cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    return env


def cuda_visible_devices(device: str) -> str | None:
    """A worker's device as CUDA_VISIBLE_DEVICES: "cuda:0,1" -> "0,1", "cpu" -> "" (no GPU),
    "cuda" -> None (inherit the supervisor's)."""
    if device == "cpu":
        return ""
    if device.startswith("cuda:"):
        return device[len("cuda:"):]
    return None


def _load_prctl():  # type: ignore[no-untyped-def]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):  # not Linux: children outlive a SIGKILLed supervisor
        return None


_prctl = _load_prctl()


def _die_with_parent(parent_pid: int) -> None:
    """Runs in the child between fork and exec: SIGKILL us when the supervisor dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)


def _before_exec(parent_pid: int | None, cpus: tuple[int, ...] | None) -> None:
    """Runs in the child between fork and exec. The CPU affinity set here is inherited by the
    program and every thread it starts (torch sizes its pool from it)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if parent_pid is not None:
        _die_with_parent(parent_pid)


def rotate_log(path: Path, max_bytes: int, backups: int, *, in_use: bool) -> bool:
    """Rotate ``path`` to ``path.1`` .. ``path.N`` if it reached ``max_bytes``. True if rotated."""
    try:
        if path.stat().st_size < max_bytes:
            return False
    except FileNotFoundError:
        return False
    if backups < 1:
        with open(path, "r+b") as f:
            f.truncate(0)
        return True
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    first = path.with_name(f"{path.name}.1")
    if in_use:
        shutil.copyfile(path, first)
        with open(path, "r+b") as f:
            f.truncate(0)
    else:
        os.replace(path, first)
    return True


def tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> list[str]:
    """The last lines of a log, for a one-screen failure report."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - max_bytes, 0))
            data = f.read()
    except FileNotFoundError:
        return []
    return data.decode("utf-8", "replace").splitlines()[-lines:]


class ChildProcess:
    """A command run as the leader of its own process group, so signals reach its whole tree."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
        die_with_parent: bool = True,
        cpus: tuple[int, ...] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.die_with_parent = die_with_parent
        self.cpus = cpus  # cores to pin it to at its next spawn; None: wherever it may run
        self._popen: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # also the process group id
        self.returncode: int | None = None
        self._group_reaped = False

    @property
    def alive(self) -> bool:
        return self._popen is not None and self.returncode is None

    def spawn(self) -> int:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        parent = os.getpid() if self.die_with_parent else None
        cpus = self.cpus
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"---- {stamp} supervisor: starting {self.name}: {shlex.join(self.argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=(lambda: _before_exec(parent, cpus)) if parent or cpus else None,
            )
        self.pid = self._popen.pid
        self.returncode = None
        self._group_reaped = False
        return self.pid

    def poll(self) -> int | None:
        """Reap the leader if it exited; its exit code (negative: killed by that signal)."""
        if self._popen is None:
            return None
        if self.returncode is None:
            self.returncode = self._popen.poll()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        assert self._popen is not None
        self.returncode = self._popen.wait(timeout)
        return self.returncode

    def terminate(self) -> None:
        self.signal_group(signal.SIGTERM)

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def reap_group(self) -> None:
        """After the leader exited: SIGKILL what is left of its group (an engine core, say),
        once, so that a later signal can never reach a new group that reused the id."""
        if self.returncode is not None and not self._group_reaped:
            self.signal_group(signal.SIGKILL)
            self._group_reaped = True

    def signal_group(self, sig: int) -> None:
        """``sig`` to the whole group, unless it is gone (or was reaped: its id may be reused)."""
        if self.pid is None or self._group_reaped:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def group_rss(pid: int) -> int | None:
    """Resident bytes of a process and everything it started (an engine core, say)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total
