"""What every long-running process of the stack does once it has started: move the objects
made while starting (imported modules, a loaded model, engine state) out of the garbage
collector's reach with ``gc.freeze()``.

Why: a full collection walks every tracked object. In a chat worker, with torch and
transformers (or vLLM) imported, that is a few hundred thousand objects and well over 100 ms
on these CPUs, and it comes at random, mid-stream: a stall every few seconds, in the tail of
time to first token and between tokens. Frozen, those objects are never walked again; what
the process makes while serving is collected as before. vLLM's own server does the same in
its API server and engine core; a chat worker hosting vLLM's ``AsyncLLM`` has to do it itself.
``TEXTSERVE_GC_FREEZE=0`` leaves it out (to measure what it buys).
"""

from __future__ import annotations

import gc
import logging
import os
import time


def freeze_startup_heap(log: logging.Logger) -> None:
    if os.environ.get("TEXTSERVE_GC_FREEZE", "1") == "0":
        log.info("TEXTSERVE_GC_FREEZE=0: the startup heap stays in the collector's walks")
        return
    started = time.perf_counter()
    gc.collect()  # what starting left as garbage goes first, not into the frozen heap
    gc.freeze()
    log.info("froze %d startup objects out of the garbage collector's walks (%.0f ms)",
             gc.get_freeze_count(), (time.perf_counter() - started) * 1000)
