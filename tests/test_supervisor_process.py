"""Real processes: ChildProcess spawn/signal/reap/rotate, the daemon's control socket, the CLI.

The daemon tests run the real ``python -m supervisor`` against the real child commands; they only
assert what holds whether or not broker/workers/wsfront can serve yet (the full-stack tests live
elsewhere). Run dirs are short (/tmp/ts-*) because of the unix socket path limit.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import psutil
import pytest

from supervisor import control
from supervisor.process import REPO_ROOT, ChildProcess, child_env, cuda_visible_devices, pid_alive, rotate_log
from supervisor.rundir import RunDir
from wsfront.config import FrontConfig

PY = sys.executable


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def python_child(tmp: Path, name: str, code: str) -> ChildProcess:
    return ChildProcess(name, [PY, "-c", textwrap.dedent(code)], env=child_env(os.environ), log_path=tmp / f"{name}.log")


# A child that starts a grandchild ignoring SIGTERM, then waits; both write their pids.
TREE = """
    import os, signal, subprocess, sys, time
    out = sys.argv[1] if len(sys.argv) > 1 else {out!r}
    gc = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('grandchild up', flush=True); time.sleep(600)"])
    open(out, "w").write(f"{{os.getpid()}} {{gc.pid}}")
    time.sleep(600)
"""


def read_pids(path: Path) -> tuple[int, int]:
    wait_for(lambda: path.exists() and len(path.read_text().split()) == 2, what=str(path))
    child, grandchild = map(int, path.read_text().split())
    return child, grandchild


# ---- ChildProcess ------------------------------------------------------------------------------


def test_child_output_and_errors_are_appended_to_its_log_across_respawns(tmp_dir: Path) -> None:
    child = python_child(tmp_dir, "echo", "import sys; print('out line'); print('err line', file=sys.stderr)")
    for _ in range(2):
        child.spawn()
        assert child.wait(10) == 0
    lines = (tmp_dir / "echo.log").read_text().splitlines()
    assert lines.count("out line") == 2 and lines.count("err line") == 2
    assert sum(line.startswith("---- ") and "supervisor: starting echo" in line for line in lines) == 2


def test_a_child_leads_its_own_process_group(tmp_dir: Path) -> None:
    child = python_child(tmp_dir, "sleeper", "import time; time.sleep(600)")
    pid = child.spawn()
    try:
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert os.getpgid(pid) != os.getpgrp()
    finally:
        child.kill()
        child.wait(10)


def test_terminate_sends_sigterm_so_the_child_can_exit_cleanly(tmp_dir: Path) -> None:
    child = python_child(
        tmp_dir,
        "graceful",
        """
        import signal, sys, time
        def bye(*_):
            print("got SIGTERM, draining", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(600)
        """,
    )
    child.spawn()
    wait_for(lambda: "ready" in child.log_path.read_text().splitlines(), what="ready")
    child.terminate()
    assert child.wait(10) == 0
    assert "got SIGTERM, draining" in child.log_path.read_text()
    assert child.poll() == 0 and not child.alive


def test_kill_takes_down_the_child_and_its_grandchild(tmp_dir: Path) -> None:
    pids = tmp_dir / "pids"
    child = python_child(tmp_dir, "tree", TREE.format(out=str(pids)))
    child.spawn()
    pid, grandchild = read_pids(pids)
    assert pid == child.pid and pid_alive(grandchild)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL
    wait_for(lambda: not pid_alive(grandchild), what="grandchild gone")


def test_terminate_reaches_the_whole_group_and_kill_finishes_what_ignores_it(tmp_dir: Path) -> None:
    pids = tmp_dir / "pids"
    child = python_child(tmp_dir, "tree", TREE.format(out=str(pids)))
    child.spawn()
    _, grandchild = read_pids(pids)
    wait_for(lambda: "grandchild up" in child.log_path.read_text().splitlines(), what="grandchild handler installed")
    child.terminate()
    assert child.wait(10) == -signal.SIGTERM
    assert pid_alive(grandchild)  # it ignores SIGTERM ...
    child.reap_group()  # ... so the group cleanup after the leader's exit kills it
    wait_for(lambda: not pid_alive(grandchild), what="grandchild gone")


def test_a_child_that_exits_by_itself_leaves_no_grandchild_after_reap_group(tmp_dir: Path) -> None:
    pids = tmp_dir / "pids"
    child = python_child(tmp_dir, "crasher", TREE.format(out=str(pids)).replace("    time.sleep(600)\n", "    sys.exit(3)\n"))
    child.spawn()
    _, grandchild = read_pids(pids)
    assert child.wait(10) == 3
    assert pid_alive(grandchild)
    child.reap_group()
    wait_for(lambda: not pid_alive(grandchild), what="orphaned grandchild gone")
    child.kill()  # a later signal is a no-op, never a stray kill of a reused group id


def test_children_die_with_a_sigkilled_supervisor(tmp_dir: Path) -> None:
    pids = tmp_dir / "pids"
    parent_code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from supervisor.process import ChildProcess, child_env
        child = ChildProcess("c", [sys.executable, "-c", "import time; time.sleep(600)"],
                             env=child_env(os.environ), log_path=Path({str(tmp_dir / 'c.log')!r}))
        Path({str(pids)!r}).write_text(f"{{os.getpid()}} {{child.spawn()}}")
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([PY, "-c", parent_code], env=child_env(os.environ))
    try:
        _, child_pid = read_pids(pids)
        assert pid_alive(child_pid)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not pid_alive(child_pid), what="child killed by PR_SET_PDEATHSIG")
    finally:
        parent.kill()


def test_child_env_puts_this_repo_first_on_pythonpath_and_pins_gpus() -> None:
    env = child_env({"PYTHONPATH": "/elsewhere", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}, cuda_visible_devices="2")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO_ROOT), "/elsewhere"]
    assert env["CUDA_VISIBLE_DEVICES"] == "2"
    assert child_env({"CUDA_VISIBLE_DEVICES": "1"})["CUDA_VISIBLE_DEVICES"] == "1"  # broker/front: untouched
    assert [cuda_visible_devices(d) for d in ("cpu", "cuda:0", "cuda:2,3", "cuda")] == ["", "0", "2,3", None]


def test_a_cpu_worker_sees_no_gpu_and_imports_this_repos_packages(tmp_dir: Path) -> None:
    child = ChildProcess(
        "probe",
        [PY, "-c", "import os, supervisor; print(os.environ['CUDA_VISIBLE_DEVICES'] == '', supervisor.__file__)"],
        env=child_env({**os.environ, "CUDA_VISIBLE_DEVICES": "0"}, cuda_visible_devices=cuda_visible_devices("cpu")),
        log_path=tmp_dir / "probe.log",
        cwd=tmp_dir,
    )
    child.spawn()
    assert child.wait(10) == 0
    assert f"True {REPO_ROOT / 'supervisor' / '__init__.py'}" in child.log_path.read_text()


def test_python_m_supervisor_is_ours_even_when_pypi_supervisord_is_installed(tmp_dir: Path) -> None:
    fake = tmp_dir / "site" / "supervisor"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit('this is PyPI supervisord')\n")
    env = child_env({**os.environ, "PYTHONPATH": str(tmp_dir / "site")})
    out = subprocess.run([PY, "-m", "supervisor", "--help"], cwd=tmp_dir, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "start,stop,status,restart" in out.stdout


def test_rotation_renames_a_log_nobody_writes_and_keeps_n_backups(tmp_dir: Path) -> None:
    log = tmp_dir / "w.log"
    for i in range(5):
        log.write_bytes(f"generation {i}\n".encode() * 200)
        assert rotate_log(log, max_bytes=1024, backups=3, in_use=False)
    assert not log.exists()
    backups = sorted(p.name for p in tmp_dir.glob("w.log.*"))
    assert backups == ["w.log.1", "w.log.2", "w.log.3"]
    assert (tmp_dir / "w.log.1").read_text().startswith("generation 4")
    assert (tmp_dir / "w.log.3").read_text().startswith("generation 2")
    log.write_text("small\n")
    assert rotate_log(log, max_bytes=1024, backups=3, in_use=False) is False


def test_rotation_of_a_log_in_use_keeps_the_child_writing_to_the_live_file(tmp_dir: Path) -> None:
    child = python_child(
        tmp_dir,
        "chatty",
        """
        import sys, time
        for i in range(100000):
            print(f"line {i:06d} " + "x" * 80, flush=True)
            if i == 200:
                time.sleep(0.5)  # the test rotates here
            if i > 400:
                time.sleep(600)
        """,
    )
    child.spawn()
    try:
        wait_for(lambda: "line 000200" in child.log_path.read_text(), what="first lines")
        assert rotate_log(child.log_path, max_bytes=4096, backups=2, in_use=True)
        rotated = (tmp_dir / "chatty.log.1").read_text()
        assert "line 000000" in rotated
        wait_for(lambda: "line 000400" in child.log_path.read_text(), what="lines after rotation")
        live = child.log_path.read_text()
        assert "line 000000" not in live and "\0" not in live  # O_APPEND: no hole where the old data was
    finally:
        child.kill()
        child.wait(10)


# ---- the daemon over its control socket, and the CLI --------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_stack(tmp: Path, port: int, **supervisor: object) -> Path:
    # startsecs long enough that a worker failing on its model (after importing torch) is a fast failure
    settings = {"startsecs": 30.0, "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "startretries": 2,
                "stop_timeout_s": 5, "start_timeout_s": 60, "model_cache": str(tmp / "models"), **supervisor}
    lines = ["[supervisor]"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()]
    lines += [
        "[wsfront]", "host = '127.0.0.1'", f"port = {port}",
        # a model path that does not exist: a worker can never load it, whatever state the workers package is in
        "[[workers]]", "name = 'chat-0'", "kind = 'chat'", f"model = '{tmp}/no-such-model'",
        "[[workers]]", "name = 'tool-0'", "kind = 'tool'", f"model = '{tmp}/no-such-model'",
    ]
    path = tmp / "stack.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "supervisor", *args], env=child_env(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def stack_env(tmp_dir: Path) -> dict[str, str]:
    return {**os.environ, "TEXT_API_KEY": "test-key-123", "RUN_DIR": str(tmp_dir / "run")}


@pytest.fixture
def daemon(tmp_dir: Path, stack_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], Path, RunDir]]:
    config = write_stack(tmp_dir, free_port())
    run_dir = RunDir(tmp_dir / "run")
    proc = subprocess.Popen(
        [PY, "-m", "supervisor", "start", "--foreground", "-c", str(config)],
        env=child_env(stack_env),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_dir / "daemon.err", "wb"),
    )
    wait_for(lambda: run_dir.live_pid() == proc.pid or proc.poll() is not None, what="pid file")
    assert proc.poll() is None, (tmp_dir / "daemon.err").read_text()
    yield proc, config, run_dir
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def status(run_dir: RunDir) -> control.StatusReply:
    reply = control.call(run_dir.control_endpoint, control.StatusRequest(), timeout_s=5)
    assert isinstance(reply, control.StatusReply)
    return reply


def test_daemon_runs_the_stack_in_order_and_reports_it_on_the_control_socket(daemon, tmp_dir: Path) -> None:
    proc, _, run_dir = daemon
    reply = wait_for(lambda: status(run_dir), what="status")
    assert reply.supervisor_pid == proc.pid and not reply.stopping
    assert [(p.name, p.kind, p.device) for p in reply.processes] == [
        ("broker", "broker", ""), ("chat-0", "chat", "cpu"), ("tool-0", "tool", "cpu"), ("wsfront", "wsfront", ""),
    ]
    assert all(p.state in ("STARTING", "RUNNING", "BACKOFF", "FATAL") for p in reply.processes)
    assert stat.S_IMODE(run_dir.path.stat().st_mode) == 0o700
    assert run_dir.pid_file.read_text().strip() == str(proc.pid)
    for name in ("broker", "chat-0", "tool-0", "wsfront"):
        conf = run_dir.child_config(name)
        assert stat.S_IMODE(conf.stat().st_mode) == 0o600
        assert run_dir.log(name).exists()
    front = msgspec.json.decode(run_dir.child_config("wsfront").read_bytes(), type=FrontConfig)
    assert front.api_key == "test-key-123" and front.broker == f"ipc://{run_dir.path}/front.ipc"


def test_workers_that_cannot_start_end_fatal_after_startretries(daemon) -> None:
    _, _, run_dir = daemon
    reply = wait_for(
        lambda: (r := status(run_dir)) and all(p.state == "FATAL" for p in r.processes if p.kind in ("chat", "tool")) and r,
        timeout=60,
        what="workers FATAL",
    )
    for p in reply.processes:
        if p.kind in ("chat", "tool"):
            assert p.pid is None and p.restarts == 1 and "gave up after 2 fast failures" in p.detail


def test_restart_by_name_starts_a_new_process_and_unknown_names_are_refused(daemon) -> None:
    _, _, run_dir = daemon
    wait_for(lambda: status(run_dir), what="status")
    reply = control.call(run_dir.control_endpoint, control.RestartRequest(name="nope"), timeout_s=5)
    assert isinstance(reply, control.Failed) and "no process named 'nope'" in reply.message
    before = {p.name: p for p in status(run_dir).processes}["broker"]
    reply = control.call(run_dir.control_endpoint, control.RestartRequest(name="broker"), timeout_s=15)
    assert isinstance(reply, control.Done) and reply.pid is not None
    assert reply.pid != before.pid
    after = {p.name: p for p in status(run_dir).processes}["broker"]
    assert after.restarts == before.restarts + 1


def test_cli_stop_shuts_everything_down_and_cleans_the_run_dir(daemon, stack_env: dict[str, str]) -> None:
    proc, config, run_dir = daemon
    pids = [p.pid for p in wait_for(lambda: status(run_dir), what="status").processes if p.pid is not None]
    out = cli("stop", "-c", str(config), env=stack_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stopped"
    assert proc.wait(10) == 0
    assert not run_dir.pid_file.exists() and not run_dir.control_socket.exists()
    assert not (run_dir.path / "front.ipc").exists() and not (run_dir.path / "workers.ipc").exists()
    assert not [pid for pid in pids if pid_alive(pid)]
    again = cli("stop", "-c", str(config), env=stack_env)
    assert (again.returncode, again.stdout.strip()) == (0, "not running")


def test_sigterm_to_the_supervisor_stops_the_stack_like_stop(daemon) -> None:
    proc, _, run_dir = daemon
    pids = [p.pid for p in wait_for(lambda: status(run_dir), what="status").processes if p.pid is not None]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert run_dir.live_pid() is None and not run_dir.control_socket.exists()
    assert not [pid for pid in pids if pid_alive(pid)]


def test_cli_status_prints_a_table_or_json_and_exits_1_when_not_all_running(daemon, stack_env) -> None:
    proc, config, run_dir = daemon
    wait_for(lambda: all(p.state == "FATAL" for p in status(run_dir).processes if p.kind in ("chat", "tool")),
             timeout=60, what="workers FATAL")
    table = cli("status", "-c", str(config), env=stack_env)
    assert table.returncode == 1
    lines = table.stdout.splitlines()
    assert lines[0] == f"supervisor pid {proc.pid}"
    assert lines[1].split()[:7] == ["NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "DEVICE"]
    assert [line.split()[0] for line in lines[2:]] == ["broker", "chat-0", "tool-0", "wsfront"]
    as_json = cli("status", "--json", "-c", str(config), env=stack_env)
    assert as_json.returncode == 1
    decoded = msgspec.json.decode(as_json.stdout, type=list[control.ProcessInfo])
    assert [p.name for p in decoded] == ["broker", "chat-0", "tool-0", "wsfront"]


def test_cli_start_refuses_a_second_supervisor_in_the_same_run_dir(daemon, stack_env) -> None:
    proc, config, _ = daemon
    out = cli("start", "-c", str(config), env=stack_env)
    assert out.returncode == 1
    assert f"already running (supervisor pid {proc.pid}" in out.stderr


def test_cli_status_and_stop_without_a_supervisor(tmp_dir: Path, stack_env) -> None:
    config = write_stack(tmp_dir, free_port())
    out = cli("status", "-c", str(config), env=stack_env)
    assert out.returncode == 3 and "not running" in out.stdout
    out = cli("status", "--json", "-c", str(config), env=stack_env)
    assert (out.returncode, out.stdout.strip()) == (3, "[]")
    out = cli("restart", "chat-0", "-c", str(config), env=stack_env)
    assert out.returncode == 3
    env_without_key = {k: v for k, v in stack_env.items() if k != "TEXT_API_KEY"}
    out = cli("stop", "-c", str(config), env=env_without_key)
    assert (out.returncode, out.stdout.strip()) == (0, "not running")


def test_cli_config_errors_exit_2_with_one_line(tmp_dir: Path, stack_env) -> None:
    config = write_stack(tmp_dir, free_port())
    env_without_key = {k: v for k, v in stack_env.items() if k != "TEXT_API_KEY"}
    out = cli("start", "-c", str(config), env=env_without_key)
    assert (out.returncode, out.stderr) == (2, "error: TEXT_API_KEY is required\n")
    config.write_text(config.read_text() + "bogus = 1\n")
    out = cli("status", "-c", str(config), env=stack_env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "bogus" in out.stderr and str(config) in out.stderr


def test_cli_start_refuses_a_port_already_in_use(tmp_dir: Path, stack_env) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = write_stack(tmp_dir, busy.getsockname()[1])
        out = cli("start", "-c", str(config), env=stack_env)
    assert out.returncode == 1 and "already in use" in out.stderr
    assert RunDir(tmp_dir / "run").live_pid() is None


def test_cli_start_that_fails_says_why_shows_the_log_and_leaves_nothing_running(tmp_dir: Path, stack_env) -> None:
    config = write_stack(tmp_dir, free_port(), start_timeout_s=60)
    out = cli("start", "-c", str(config), env=stack_env, timeout=120)
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(r"-0 (exited with code \d+|killed by SIG\w+) during start", errors[0]), \
        out.stderr
    assert "--- last" in out.stderr  # the failing process's log follows the reason
    run_dir = RunDir(tmp_dir / "run")
    wait_for(lambda: run_dir.live_pid() is None, timeout=30, what="supervisor gone")
    assert not run_dir.control_socket.exists()
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if str(run_dir.conf) in " ".join(p.info["cmdline"] or [])]


def test_a_sigkilled_supervisor_takes_its_children_along_and_its_stale_pid_file_reads_not_running(
    daemon, stack_env
) -> None:
    proc, config, run_dir = daemon
    pids = [p.pid for p in wait_for(lambda: status(run_dir), what="status").processes if p.pid is not None]
    assert pids
    proc.kill()
    proc.wait(10)
    for pid in pids:
        wait_for(lambda: not pid_alive(pid), what=f"child {pid} gone")
    assert run_dir.pid_file.exists() and run_dir.live_pid() is None
    out = cli("status", "-c", str(config), env=stack_env)
    assert out.returncode == 3 and "not running" in out.stdout
