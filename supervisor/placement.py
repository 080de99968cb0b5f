"""Where workers run: one worker per GPU from a ``cuda:auto`` table, and CPU cores per worker.

Pure functions of the workers and the host (``Host``: the CPUs this supervisor may use, the GPU
ids it sees); ``Host.detect`` is the one place that looks at the machine.

CPU plan (workers whose ``cpus`` is "" / "auto" and whose device is "cpu"): the front and the
broker keep the first free core (they are not pinned; the kernel finds them the idle core),
each tool worker gets a core of its own where that still leaves every chat worker two cores
(otherwise the tool workers share the front's core: a tool turn is one short forward pass),
and the chat workers split the rest evenly. With no core to spare for the front (no more cores
than chat workers) the chat workers take a core each, round-robin, and the tool workers share
the first. One core: nobody is pinned. On 2 cores with a chat and a tool worker: tool, front
and broker on core 0, chat on core 1. A worker's torch thread pool follows its cores
(``torch_threads = 0``). Explicit ``cpus`` ("0-3,6") are taken out of the plan first; "none"
leaves a worker unpinned; GPU workers and the vllm and trt engines (which place their own
threads) are not pinned unless they say so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import msgspec

from workers.config import WorkerConfig

AUTO_DEVICE = "cuda:auto"
# Engines whose threads live in the worker process and follow its affinity. vLLM binds its own
# CPU threads (VLLM_CPU_OMP_THREADS_BIND) in an engine-core process, TensorRT-LLM runs on GPUs.
PLANNED_ENGINES = ("hf", "classifier")
_CPU_LIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

Cpus = tuple[int, ...]


class PlacementError(ValueError):
    """A ``cpus`` or ``cuda:auto`` setting this host cannot honour; one line for an operator."""


@dataclass(frozen=True)
class Host:
    cpus: Cpus = ()  # () = unknown: explicit cpus are not checked, nothing is planned
    gpus: tuple[str, ...] = ()  # CUDA device ids, as CUDA_VISIBLE_DEVICES names them

    @classmethod
    def detect(cls, env: Mapping[str, str], *, gpus: bool = True) -> Host:
        """This process's CPU affinity and, if ``gpus``, the GPUs: CUDA_VISIBLE_DEVICES when
        set (the operator's choice), else ``nvidia-smi -L``."""
        return cls(host_cpus(), detect_gpus(env) if gpus else ())


def host_cpus() -> Cpus:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def detect_gpus(env: Mapping[str, str]) -> tuple[str, ...]:
    if "CUDA_VISIBLE_DEVICES" in env:
        return parse_visible_devices(env["CUDA_VISIBLE_DEVICES"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return parse_nvidia_smi(out)


def parse_visible_devices(value: str) -> tuple[str, ...]:
    """CUDA_VISIBLE_DEVICES as a list of ids; CUDA stops at the first invalid (negative) one."""
    ids: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part or part.startswith("-"):
            break
        ids.append(part)
    return tuple(ids)


def parse_nvidia_smi(listing: str) -> tuple[str, ...]:
    """``nvidia-smi -L`` ("GPU 0: NVIDIA H100 ... (UUID: GPU-...)", MIG lines indented): the indices."""
    return tuple(m.group(1) for m in re.finditer(r"(?m)^GPU (\d+):", listing))


# ---- GPUs -----------------------------------------------------------------------------------


def expand_gpu_workers(workers: Sequence[WorkerConfig], gpus: Sequence[str]) -> list[WorkerConfig]:
    """Each ``device = "cuda:auto"`` table becomes one worker per GPU: ``NAME-0`` on the first
    GPU, ``NAME-1`` on the second, ... (its ``name`` is a prefix). Other tables stay as they are."""
    out: list[WorkerConfig] = []
    for w in workers:
        if w.device != AUTO_DEVICE:
            out.append(w)
            continue
        if not gpus:
            raise PlacementError(f"[[workers]] {w.name}: device {AUTO_DEVICE!r} but no GPU found "
                                 "(nvidia-smi -L lists none, or CUDA_VISIBLE_DEVICES is empty)")
        if bad := [g for g in gpus if not g.isdigit()]:
            raise PlacementError(f"[[workers]] {w.name}: device {AUTO_DEVICE!r} needs GPU indices; "
                                 f"CUDA_VISIBLE_DEVICES names {bad[0]!r} (use indices, or cuda:N tables)")
        out += [msgspec.structs.replace(w, name=f"{w.name}-{i}", device=f"cuda:{g}")
                for i, g in enumerate(gpus)]
    return out


# ---- CPUs -----------------------------------------------------------------------------------


def parse_cpus(text: str) -> Cpus | None | str:
    """``cpus`` of a worker: "auto" (also ""), "none", or the cores of a list like "0-3,6"."""
    text = text.strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text == "none":
        return None
    if not _CPU_LIST.match(text.replace(" ", "")):
        raise PlacementError(f"cpus {text!r}: expected \"auto\", \"none\" or a list like \"0-3,6\"")
    cores: set[int] = set()
    for part in text.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise PlacementError(f"cpus {text!r}: range {part} runs backwards")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cores))


def format_cpus(cpus: Sequence[int] | None) -> str:
    """(0, 1, 2, 5) -> "0-2,5"; None or () -> ""."""
    if not cpus:
        return ""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def check_cpus(w: WorkerConfig, host: Cpus) -> None:
    """A worker's ``cpus`` parses and, when the host's CPUs are known, names only those."""
    try:
        cpus = parse_cpus(w.cpus)
    except PlacementError as e:
        raise PlacementError(f"[[workers]] {w.name}: {e}") from None
    if isinstance(cpus, tuple) and host and not set(cpus) <= set(host):
        raise PlacementError(f"[[workers]] {w.name}: cpus {w.cpus!r}: this host lets us use "
                             f"{format_cpus(host)}")


def plan_cpus(workers: Sequence[WorkerConfig], host: Cpus) -> dict[str, Cpus | None]:
    """The cores each worker is pinned to (None: not pinned), as the module doc says."""
    plan: dict[str, Cpus | None] = {}
    auto: list[WorkerConfig] = []
    for w in workers:
        cpus = parse_cpus(w.cpus)
        if isinstance(cpus, str):
            if w.device == "cpu" and w.resolved_engine() in PLANNED_ENGINES:
                auto.append(w)
            else:
                plan[w.name] = None
        else:
            plan[w.name] = cpus
    taken = {c for cpus in plan.values() if cpus for c in cpus}
    free = [c for c in sorted(host) if c not in taken]
    chats = [w.name for w in auto if w.kind == "chat"]
    tools = [w.name for w in auto if w.kind == "tool"]
    if len(free) < 2:
        return plan | {w.name: None for w in auto}
    spare = len(free) > len(chats)  # a core left for the front and the broker
    rest = free[1:] if spare else free
    if spare and len(rest) - len(tools) >= 2 * len(chats):
        plan |= {name: (core,) for name, core in zip(tools, rest)}
        rest = rest[len(tools):]
    else:
        plan |= {name: (free[0],) for name in tools}
    if spare:  # at least a core per chat worker
        plan |= dict(zip(chats, _split(rest, len(chats))))
    else:
        plan |= {name: (rest[-1 - i % len(rest)],) for i, name in enumerate(chats)}
    return plan


def _split(cores: Sequence[int], parts: int) -> list[Cpus]:
    """``parts`` contiguous runs, as even as can be (the first ones one longer)."""
    out, start = [], 0
    for i in range(parts):
        size = len(cores) // parts + (1 if i < len(cores) % parts else 0)
        out.append(tuple(cores[start:start + size]))
        start += size
    return out
