"""CurveZMQ: the keys layout, the broker's ZAP decisions and refusal log (pure), and a real
broker process whose tcp:// backend lets in only the clients it has keys for."""

from __future__ import annotations

import errno
import re

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from broker import curve, frames
from supervisor.keys import KeyNameError, make_keys
from tests.stack import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent


def zap_request(key: bytes, mechanism: bytes = b"CURVE", version: bytes = b"1.0") -> list[bytes]:
    return [version, b"7", b"workers", b"10.0.0.5", b"", mechanism, key]


def test_make_keys_writes_an_owner_only_layout_and_never_replaces_a_key(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    assert make_keys(d, ["local", "host-b"]) == ["broker", "local", "host-b"]
    for path in [d, *d.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
    bundle = curve.load_client(d / "host-b")
    assert bundle.server == curve.load_server(d)[0]
    assert curve.allowed_clients(d) == {curve.load_client(d / n).public for n in ("local", "host-b")}
    before = (d / "broker.key_secret").read_bytes(), (d / "host-b" / "client.key_secret").read_bytes()
    assert make_keys(d, ["local", "host-b", "host-c"]) == ["host-c"]
    assert before == ((d / "broker.key_secret").read_bytes(), (d / "host-b" / "client.key_secret").read_bytes())
    with pytest.raises(KeyNameError):
        make_keys(d, ["clients"])


def test_a_missing_bundle_is_one_line_naming_the_command_that_makes_keys(tmp_path: Path) -> None:
    with pytest.raises(curve.KeysError, match="client.key_secret.*python -m supervisor keys"):
        curve.load_client(tmp_path)


def test_zap_lets_in_allowed_curve_keys_only_and_says_why_it_refuses() -> None:
    good, bad = os.urandom(32), os.urandom(32)
    allowed = {z85.encode(good)}
    reply, refusal = curve.zap_reply(zap_request(good), lambda: allowed)
    assert reply[:4] == [b"1.0", b"7", b"200", b"OK"] and refusal is None
    reply, refusal = curve.zap_reply(zap_request(bad), lambda: allowed)
    assert reply[2] == b"400"
    assert refusal == (f"refused a client from 10.0.0.5 on the workers endpoint: its public key "
                       f"{z85.encode(bad).decode()} is not among the allowed keys")
    reply, refusal = curve.zap_reply(zap_request(b"", mechanism=b"NULL")[:6], lambda: allowed)
    assert reply[2] == b"400" and "does not speak CURVE" in refusal
    reply, refusal = curve.zap_reply(zap_request(good, version=b"2.0"), lambda: allowed)
    assert reply[2] == b"400"


def test_a_refusal_that_repeats_is_logged_once_per_interval_with_a_count() -> None:
    log = curve.RefusalLog(every_s=30)
    assert log.note(("k",), 0.0) == 0
    assert [log.note(("k",), t) for t in (0.1, 0.2, 29.0)] == [None, None, None]
    assert log.note(("other",), 1.0) == 0
    assert log.note(("k",), 30.5) == 3
    assert log.note(("k",), 31.0) is None


def test_handshake_failures_before_zap_say_what_the_client_got_wrong() -> None:
    no_keys = {"event": zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, "value": zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH}
    wrong_server = {"event": zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, "value": zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC}
    assert "does not speak CURVE" in curve.handshake_failure(no_keys, "workers")
    assert "trusts another broker key" in curve.handshake_failure(wrong_server, "fronts")
    hung_up = {"event": zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL, "value": errno.EPIPE}
    assert "hung up during the handshake" in curve.handshake_failure(hung_up, "workers")


# ---- a real broker --------------------------------------------------------------------------


def register(ctx: zmq.Context, endpoint: str, name: str, keys: curve.ClientKeys | None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, name.encode())
    if keys is not None:
        curve.secure_client(sock, keys)
    sock.connect(endpoint)
    sock.send(frames.encode(frames.Ready(name, "tool", "classifier", "m", 4, os.getpid(), "cpu",
                                          frames.PROTOCOL_VERSION)))
    return sock


def test_a_curve_broker_registers_workers_with_a_known_key_and_logs_the_others(tmp_path: Path) -> None:
    keys, other = tmp_path / "keys", tmp_path / "other"
    make_keys(keys, ["local"])
    make_keys(other, ["local"])  # a key pair the broker never heard of, and another broker's key
    port = free_port()
    front_ep, back_ep = f"ipc://{tmp_path}/front.ipc", f"tcp://127.0.0.1:{port}"
    log = tmp_path / "broker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "--frontend", front_ep, "--backend", back_ep,
                                 "--curve-dir", str(keys)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    ctx = zmq.Context()
    try:
        good = curve.load_client(keys / "local")
        wrong = curve.load_client(other / "local")
        stranger = curve.ClientKeys(wrong.public, wrong.secret, good.server)  # right broker, unknown key
        socks = [register(ctx, back_ep, "good", good), register(ctx, back_ep, "stranger", stranger),
                 register(ctx, back_ep, "no-keys", None), register(ctx, back_ep, "wrong-broker", wrong)]
        front = ctx.socket(zmq.DEALER)
        front.setsockopt(zmq.LINGER, 0)
        front.connect(front_ep)

        def registered() -> set[str]:
            front.send(frames.encode(frames.FrontHeartbeat()))
            if not front.poll(1000):
                return set()
            status = frames.to_front_decoder.decode(front.recv())
            return {w.name for w in status.workers} if isinstance(status, frames.BrokerStatus) else set()
        wait_for(lambda: "good" in registered(), 60, 0.1, "the worker with a known key registered")
        # One refusal line per kind of client (a kind that retries repeats only its own line).
        # A client without CURVE is refused as one, or seen hanging up on the greeting first
        # (libzmq reports whichever it noticed).
        no_curve = re.compile("on the workers endpoint: (it does not speak CURVE|it hung up during)")
        stranger_line = f"its public key {stranger.public.decode()} is not among the allowed keys"

        def all_refused() -> str:
            t = log.read_text()
            return t if stranger_line in t and no_curve.search(t) and "trusts another broker key" in t else ""
        text = wait_for(all_refused, 60, 0.1, "a refusal logged for each of the three clients")
        time.sleep(0.5)  # the refused ones keep retrying; none of them gets in
        assert registered() == {"good"}
        assert f"CurveZMQ on {back_ep}" in text
        for sock in socks:  # (they must live until here: a collected socket is closed)
            sock.close(0)
    finally:
        ctx.destroy(linger=0)  # every socket, also when an assertion failed: term would wait
        proc.terminate()
        assert proc.wait(10) == 0


def test_handshake_watch_names_a_refused_key_and_a_dropped_handshake_but_not_a_restart():
    watch = curve.HandshakeWatch("PUBKEY")
    end = "tcp://broker:5556"
    assert watch.on_event(zmq.EVENT_CONNECTED, 15, end) is None
    line = watch.on_event(zmq.EVENT_HANDSHAKE_FAILED_AUTH, 400, end)
    assert line is not None and "refused" in line and "PUBKEY" in line and "ZAP status 400" in line
    assert watch.on_event(zmq.EVENT_DISCONNECTED, 15, end) is None  # the same refusal, said once
    # A wrong broker.key: the broker drops the connection before any handshake succeeded.
    assert watch.on_event(zmq.EVENT_CONNECTED, 15, end) is None
    line = watch.on_event(zmq.EVENT_DISCONNECTED, 15, end)
    assert line is not None and "broker.key" in line
    # A broker restart after a good handshake is not a refusal.
    assert watch.on_event(zmq.EVENT_CONNECTED, 15, end) is None
    assert watch.on_event(zmq.EVENT_HANDSHAKE_SUCCEEDED, 0, end) is None
    assert watch.on_event(zmq.EVENT_DISCONNECTED, 15, end) is None


def test_a_refused_client_logs_why_on_its_own_side(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A real CurveZMQ broker; clients watching their socket's monitor (broker.handshake_monitor)
    say in their own log that they were refused, and how: unknown key, or wrong broker key."""
    import asyncio
    import logging

    import zmq.asyncio

    from broker.handshake_monitor import log_refusals, monitor_refusals

    keys, other = tmp_path / "keys", tmp_path / "other"
    make_keys(keys, ["local"])
    make_keys(other, ["local"])
    back_ep = f"tcp://127.0.0.1:{free_port()}"
    with open(tmp_path / "broker.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker", "--frontend", f"ipc://{tmp_path}/f.ipc",
                                 "--backend", back_ep, "--curve-dir", str(keys)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    good = curve.load_client(keys / "local")
    wrong = curve.load_client(other / "local")
    clients = {"good": good, "stranger": curve.ClientKeys(wrong.public, wrong.secret, good.server),
               "wrong-broker": wrong}

    async def run() -> None:
        ctx = zmq.asyncio.Context()
        socks, tasks = [], []
        for name, k in clients.items():
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IDENTITY, name.encode())
            curve.secure_client(sock, k)
            tasks.append(asyncio.create_task(
                log_refusals(sock, monitor_refusals(sock), k.public, logging.getLogger(name))))
            sock.connect(back_ep)
            socks.append(sock)
        # The good client registers and hears the broker's heartbeat: its handshake is done, so
        # a (wrong) refusal line for it would already be in the log.
        await socks[0].send(frames.encode(frames.Ready("good", "tool", "classifier", "m", 4,
                                                       os.getpid(), "cpu",
                                          frames.PROTOCOL_VERSION)))
        await asyncio.wait_for(socks[0].recv(), 20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len({r.name for r in caplog.records
                                                   if r.levelno == logging.ERROR}) < 2:
            await asyncio.sleep(0.1)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in socks:
            sock.close(0)
        ctx.term()

    try:
        with caplog.at_level(logging.ERROR):
            asyncio.run(run())
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    said = {r.name: r.getMessage() for r in caplog.records if r.levelno == logging.ERROR}
    assert set(said) == {"stranger", "wrong-broker"}, said
    assert f"refused this client's CurveZMQ key {wrong.public.decode()}" in said["stranger"]
    assert "broker.key" in said["wrong-broker"]
