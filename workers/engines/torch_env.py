"""Process-wide torch settings shared by the torch engines: CPU threads, device, dtype."""

from __future__ import annotations

import os
from typing import Any

from ..config import WorkerConfig
from ..quantization import Capability


def configure_threads(cfg: WorkerConfig) -> int:
    """Set torch's intra-op threads and return how many.

    torch defaults to every physical core of the host, whatever CPUs this process is pinned
    to; a chat and a tool worker side by side would then oversubscribe the same cores.
    """
    import torch

    threads = cfg.torch_threads
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def torch_device(spec: str) -> str:
    """The torch device for a worker's ``device`` setting ("cpu", "cuda", "cuda:N[,M]").

    The supervisor narrows CUDA_VISIBLE_DEVICES to the worker's GPUs, after which they are
    numbered from 0; a worker started by hand sees every GPU and keeps the index it was given.
    """
    if not spec.startswith("cuda"):
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} asked for, but torch sees no CUDA device")
    index = spec.partition(":")[2].split(",")[0]
    if index.isdigit() and int(index) < torch.cuda.device_count() and torch.cuda.device_count() > 1:
        return f"cuda:{index}"
    return "cuda:0"


def torch_dtype(name: str) -> Any:
    """``auto`` keeps the checkpoint's dtype; otherwise a torch dtype name such as bfloat16."""
    if name in ("", "auto"):
        return "auto"
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}; use auto, float32, float16 or bfloat16")
    return dtype


def native_bf16() -> bool:
    """The CPU multiplies bfloat16 natively (AVX512-BF16, AMX): half the bytes of float32 to
    read per weight, which is what a small model's forward on a few tokens waits for."""
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool((probe and probe()) or (amx and amx()))


def gpu_capability(device: str) -> Capability:
    """The compute capability of the worker's first GPU; None for a CPU worker, or when
    torch sees no CUDA device."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(torch_device(device))
    return major, minor
