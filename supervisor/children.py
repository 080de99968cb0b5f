"""What the stack runs: one ChildSpec per process, derived from a resolved StackConfig (pure).

Start order is broker, workers, wsfront; stop order is the reverse (front first, broker last),
so that draining workers can still send their last frames through the broker.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from broker.config import BrokerConfig
from supervisor.config import StackConfig
from workers.config import WorkerConfig
from wsfront.config import FrontConfig

ChildKind = Literal["broker", "wsfront", "chat", "tool"]


@dataclass(frozen=True)
class ChildSpec:
    name: str
    kind: ChildKind
    module: str  # run as ``python -m MODULE --config FILE``
    config: BrokerConfig | FrontConfig | WorkerConfig
    device: str = ""  # workers only: "cpu", "cuda", "cuda:N[,M]"

    @property
    def is_worker(self) -> bool:
        return self.kind in ("chat", "tool")

    def argv(self, config_path: Path) -> list[str]:
        python = getattr(self.config, "python", "") or sys.executable
        return [os.path.expanduser(python), "-m", self.module, "--config", str(config_path)]

    def config_json(self) -> bytes:
        return msgspec.json.encode(self.config)


def child_specs(cfg: StackConfig) -> list[ChildSpec]:
    """In start order."""
    specs = [ChildSpec("broker", "broker", "broker", cfg.broker)]
    specs += [ChildSpec(w.name, w.kind, "workers", w, w.device) for w in cfg.workers]
    fronts = cfg.wsfront.processes
    specs += [ChildSpec("wsfront" if fronts == 1 else f"wsfront-{i}", "wsfront", "wsfront",
                        cfg.wsfront) for i in range(fronts)]
    return specs


def stop_phases(specs: list[ChildSpec]) -> list[list[str]]:
    """Names to stop together, phase by phase: front, then workers, then broker."""
    order = (("wsfront",), ("chat", "tool"), ("broker",))
    return [names for kinds in order if (names := [s.name for s in specs if s.kind in kinds])]
