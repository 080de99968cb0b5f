"""``start``: run the supervisor detached and wait until the front's /healthz answers 200.

The front serves /healthz 200 once every configured kind has a ready worker, so success means
the stack answers turns. Any child that exits before then fails the start at once (a bad model
path or a missing engine package would otherwise crash-loop until the timeout), as does the
supervisor exiting or start_timeout_s passing: print the reason and the failing log's last
lines, stop what started, exit 1.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from supervisor import control
from supervisor.commands import stop
from supervisor.commands.report import failure
from supervisor.config import StackConfig
from supervisor.daemon import Supervisor
from supervisor.exit_reason import exit_reason
from supervisor.process import child_env, rotate_log
from supervisor.rundir import RunDir

POLL_S = 0.2
HEALTH_EVERY_S = 0.5  # each probe is a line in the front's log


def run(cfg: StackConfig, config_path: Path, env: Mapping[str, str], *, foreground: bool) -> int:
    run_dir = RunDir(Path(cfg.supervisor.run_dir))
    pid = run_dir.live_pid()
    if pid is not None:
        failure(f"already running (supervisor pid {pid if pid > 0 else '?'}, run dir {run_dir.path})")
        return 1
    if foreground:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
        )
        return Supervisor(cfg, env).run()

    host = _local_host(cfg.wsfront.host)
    if _port_in_use(host, cfg.wsfront.port):
        failure(f"port {cfg.wsfront.port} on {host} is already in use (set WS_PORT or [wsfront] port)")
        return 1
    run_dir.create()
    log_path = run_dir.log("supervisor")
    s = cfg.supervisor
    rotate_log(log_path, s.log_max_bytes, s.log_backups, in_use=False)
    with open(log_path, "ab") as log:
        progress = BuildProgress.after(run_dir.logs)  # lines of earlier runs are old news
        daemon = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "start", "--foreground", "-c", str(config_path.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(env),
            start_new_session=True,  # outlives this command and the terminal
        )
    health = f"http://{_url_host(host)}:{cfg.wsfront.port}/healthz"
    print(f"starting: supervisor pid {daemon.pid}; waiting up to {s.start_timeout_s:g}s for {health}", file=sys.stderr)
    reason, log_of = _wait_healthy(cfg, run_dir, daemon, health, progress)
    if reason is None:
        url = f"ws://{_url_host(host)}:{cfg.wsfront.port}/ws"
        print(f"running: {url} (supervisor pid {daemon.pid}, logs in {run_dir.logs})")
        return 0
    failure(reason, log_of)
    if daemon.poll() is None:
        with contextlib.redirect_stdout(io.StringIO()):  # its "stopped" would read as the outcome
            stop.run(run_dir, cfg.supervisor)
    return 1


def _wait_healthy(
    cfg: StackConfig, run_dir: RunDir, daemon: subprocess.Popen[bytes], health_url: str,
    progress: BuildProgress,
) -> tuple[str | None, Path | None]:
    """None when healthy, else (one-line reason, the log that explains it)."""
    deadline = time.monotonic() + cfg.supervisor.start_timeout_s
    status: control.StatusReply | None = None
    next_probe = 0.0
    while time.monotonic() < deadline:
        code = daemon.poll()
        if code is not None:
            return f"supervisor exited with code {code} during start", run_dir.log("supervisor")
        if run_dir.live_pid() is not None:
            try:
                reply = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=2.0)
                status = reply if isinstance(reply, control.StatusReply) else status
            except control.ControlUnavailable:
                pass
        if status is not None:
            for p in status.processes:
                if p.restarts > 0 or p.state in ("BACKOFF", "FATAL", "EXITED"):
                    return f"{p.name} {exit_reason(p.exit_code)} during start", Path(p.log)
            progress.show([(p.name, Path(p.log)) for p in status.processes
                           if p.state == "STARTING"])
        if time.monotonic() >= next_probe:
            if _healthz_ok(health_url):
                return None, None
            next_probe = time.monotonic() + HEALTH_EVERY_S
        time.sleep(POLL_S)
    reason = f"not ready after {cfg.supervisor.start_timeout_s:g}s: {health_url} did not answer 200"
    if status is None:
        return reason + "; the supervisor never answered", run_dir.log("supervisor")
    waiting = [p for p in status.processes if p.state != "RUNNING"]
    if waiting:
        reason += "; " + ", ".join(f"{p.name} {p.state} {p.detail}".rstrip() for p in waiting)
        return reason, Path(waiting[0].log)
    return reason, run_dir.log("wsfront")


class BuildProgress:
    """Echoes what starting workers log about building their builtin models (a first start
    converts and trains them for minutes), so ``start`` does not sit silent meanwhile."""

    MARK = "builtin_models: "

    def __init__(self, read: dict[Path, int]) -> None:
        self.read = read  # how far each log has been read

    @classmethod
    def after(cls, logs: Path) -> BuildProgress:
        return cls({path: path.stat().st_size for path in logs.glob("*.log")})

    def show(self, logs: list[tuple[str, Path]]) -> None:
        for name, path in logs:
            try:
                with open(path, "rb") as f:
                    f.seek(self.read.get(path, 0))
                    chunk = f.read()
            except OSError:
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]  # a half-written line waits
            self.read[path] = self.read.get(path, 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if self.MARK in line:
                    print(f"  {name}: {line.split(self.MARK, 1)[1]}", file=sys.stderr)


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # http_proxy must not catch 127.0.0.1


def _healthz_ok(url: str) -> bool:
    try:
        with _no_proxy.open(url, timeout=1.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _local_host(bind_host: str) -> str:
    """Where this host reaches a server bound to ``bind_host``."""
    return "127.0.0.1" if bind_host in ("", "0.0.0.0", "::", "*") else bind_host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
