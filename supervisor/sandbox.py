"""A throwaway stack: the real supervisor on a config of your own, in a temporary run
directory, on a free port. The integration tests and the benchmarks start theirs here."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from workers.builtin_models import resolve_model

ROOT = Path(__file__).resolve().parent.parent  # the checkout: where `python -m supervisor` runs
MODEL_CACHE = os.environ.get("TEXTSERVE_TEST_MODELS", "/tmp/textserve-test-models")
API_KEY = "test-key"


def build_models() -> dict[str, str]:
    """Build the tiny models the test configs serve (once per cache), so that a stack's start
    time is not spent building them."""
    return {kind: resolve_model(f"builtin:tiny-{kind}", MODEL_CACHE) for kind in ("chat", "tool")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """``python -m supervisor start`` on a config of our own; ``stop()`` tears it down."""

    config_text: str = ""
    env: dict[str, str] = field(default_factory=dict)
    run_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ts-", dir="/tmp"))
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        self.config = Path(self.run_dir) / "supervisor.toml"
        self.config.write_text(self.config_text or default_config())

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws?api_key={API_KEY}"

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "RUN_DIR": self.run_dir, "WS_PORT": str(self.port),
               "TEXT_API_KEY": API_KEY, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supervisor", *args, "-c", str(self.config)],
                              cwd=ROOT, env=self._env(), capture_output=True, text=True,
                              timeout=timeout)

    def cli_background(self, *args: str) -> subprocess.Popen[str]:
        """A CLI command left running (``restart`` and ``stop`` wait for drains)."""
        return subprocess.Popen([sys.executable, "-m", "supervisor", *args, "-c", str(self.config)],
                                cwd=ROOT, env=self._env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def start(self) -> None:
        build_models()
        result = self.cli("start")
        if result.returncode != 0:
            raise RuntimeError(f"supervisor start failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{self.logs()}")

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.cli("stop", timeout=60)

    def status(self) -> list[dict[str, Any]]:
        result = self.cli("status", "--json", timeout=30)
        return json.loads(result.stdout)

    def pid_of(self, name: str) -> int:
        return next(p["pid"] for p in self.status() if p["name"] == name)

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def logs(self) -> str:
        out = []
        for path in sorted(Path(self.run_dir, "logs").glob("*.log")):
            out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
        return "\n".join(out)


def default_config(chat_workers: int = 1, tool_workers: int = 1) -> str:
    lines = ["[supervisor]", f'model_cache = "{MODEL_CACHE}"', ""]
    for i in range(chat_workers):
        lines += ["[[workers]]", f'name = "chat-{i}"', 'kind = "chat"', 'engine = "hf"',
                  'model = "builtin:tiny-chat"', ""]
    for i in range(tool_workers):
        lines += ["[[workers]]", f'name = "tool-{i}"', 'kind = "tool"', 'engine = "classifier"',
                  'model = "builtin:tiny-tool"', ""]
    return "\n".join(lines)


async def open_client(url: str) -> ClientConnection:
    return await connect(url, max_size=None, compression=None)
