"""A child as the daemon holds it: what it runs (spec), its process, its lifecycle, and the
operators waiting for its restart."""

from __future__ import annotations

from collections.abc import Mapping

from supervisor.children import ChildSpec
from supervisor.config import SupervisorSettings
from supervisor.lifecycle import Lifecycle
from supervisor.process import ChildProcess, child_env, cuda_visible_devices
from supervisor.rundir import RunDir


class Child:
    def __init__(self, spec: ChildSpec, process: ChildProcess, life: Lifecycle) -> None:
        self.spec = spec
        self.process = process
        self.life = life
        self.waiters: list[list[bytes]] = []  # control envelopes owed a reply once it restarted

    @property
    def name(self) -> str:
        return self.spec.name


def make_child(spec: ChildSpec, run_dir: RunDir, env: Mapping[str, str], settings: SupervisorSettings) -> Child:
    cuda = cuda_visible_devices(spec.device) if spec.is_worker else None
    log_path = run_dir.log(spec.name)
    process = ChildProcess(
        spec.name,
        spec.argv(run_dir.child_config(spec.name)),
        env=child_env(env, cuda_visible_devices=cuda),
        log_path=log_path,
    )
    return Child(spec, process, Lifecycle(spec.name, worker=spec.is_worker, settings=settings,
                                          log_path=str(log_path)))
