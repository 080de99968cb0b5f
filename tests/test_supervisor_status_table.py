"""The status table (pure)."""

from __future__ import annotations

from supervisor.control import ProcessInfo, StatusReply
from supervisor.status_table import format_bytes, format_status, format_uptime


def reply() -> StatusReply:
    return StatusReply(
        supervisor_pid=42,
        stopping=False,
        processes=[
            ProcessInfo(name="broker", kind="broker", pid=100, state="RUNNING", uptime_s=3725.2, restarts=0,
                        in_flight=3, rss_bytes=52_428_800),
            ProcessInfo(name="chat-0", kind="chat", pid=None, state="BACKOFF", uptime_s=0.0, restarts=4,
                        device="cuda:0", exit_code=1, detail="exited with code 1; retry in 8.0s"),
        ],
    )


def test_uptime_reads_like_ps() -> None:
    assert [format_uptime(s) for s in (5, 65, 3725, 90061)] == ["5s", "1m05s", "1h02m", "1d01h"]


def test_table_has_one_aligned_row_per_process_with_dashes_for_missing_values() -> None:
    lines = format_status(reply(), width=120).splitlines()
    assert lines[0] == "supervisor pid 42"
    assert lines[1].split() == ["NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "DEVICE",
                                "INFLIGHT", "RSS", "DETAIL"]
    assert lines[2].split() == ["broker", "broker", "RUNNING", "100", "1h02m", "0", "-", "3", "50.0M"]
    assert lines[3].split()[:9] == ["chat-0", "chat", "BACKOFF", "-", "-", "4", "cuda:0", "-", "-"]
    assert lines[3].endswith("exited with code 1; retry in 8.0s")
    assert lines[2].index("RUNNING") == lines[1].index("STATE") == lines[3].index("BACKOFF")


def test_memory_reads_in_binary_units() -> None:
    assert [format_bytes(n) for n in (None, 512, 2048, 150 * 1024, 3 << 30)] == ["-", "512B", "2.0K", "150K", "3.0G"]


def test_table_lines_never_exceed_the_terminal_width() -> None:
    lines = format_status(reply(), width=50).splitlines()
    assert all(len(line) <= 50 for line in lines)
    assert lines[3].endswith("...")
