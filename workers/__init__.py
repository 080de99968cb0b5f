"""Worker processes: the runtime (DEALER socket, register, heartbeat, dispatch, output
coalescing) and the engines behind it. ``python -m workers --help`` runs one.

Only the config is exported here: importing ``workers`` must not import torch.
"""

from .config import WorkerConfig

__all__ = ["WorkerConfig"]
