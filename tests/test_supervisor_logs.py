"""``python -m supervisor logs NAME [-n N] [-f]`` on a real run directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_run_dir() -> tuple[Path, dict[str, str], Path]:
    run = Path(tempfile.mkdtemp(prefix="ts-l-", dir="/tmp"))
    (run / "logs").mkdir()
    config = run / "supervisor.toml"
    config.write_text("")
    env = {**os.environ, "RUN_DIR": str(run), "PYTHONPATH": str(ROOT)}
    return run, env, config


def logs(env, config, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "supervisor", "logs", *args, "-c", str(config)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def test_logs_prints_the_last_lines_of_one_process():
    run, env, config = setup_run_dir()
    (run / "logs" / "chat-0.log").write_text("".join(f"line {i}\n" for i in range(100)))
    out, err = logs(env, config, "chat-0", "-n", "3").communicate(timeout=30)
    assert out == "line 97\nline 98\nline 99\n", err


def test_logs_of_an_unknown_process_names_the_known_ones_and_fails():
    run, env, config = setup_run_dir()
    (run / "logs" / "broker.log").write_text("x\n")
    proc = logs(env, config, "chat-9")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "chat-9" in err and "broker" in err
    proc = logs(env, config, "../logs/broker")
    proc.communicate(timeout=30)
    assert proc.returncode == 1


def test_logs_follow_prints_appended_lines_across_a_rotation():
    run, env, config = setup_run_dir()
    log = run / "logs" / "tool-0.log"
    log.write_text("old\n")
    proc = logs(env, config, "tool-0", "-n", "1", "-f")
    try:
        assert proc.stdout.readline() == "old\n"
        with open(log, "a") as f:
            f.write("appended\n")
        assert proc.stdout.readline() == "appended\n"
        log.rename(run / "logs" / "tool-0.log.1")  # rotation: a new file takes the name
        log.write_text("after rotation\n")
        assert proc.stdout.readline() == "after rotation\n"
    finally:
        proc.kill()
        proc.communicate()
