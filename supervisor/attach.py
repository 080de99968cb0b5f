"""What ``attach`` adds: the WorkerConfig for a worker asked for at runtime (pure).

An attached worker is "one more like the ones I have": a copy of the stack's first worker of
its kind (engine, model, engine tables, limits), with the request's fields on top; without
one, the ``[[workers]]`` defaults, and then a model must be named. It is checked like a
``[[workers]]`` table, against the names in use, and against the GPU memory the running
workers already hold.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import msgspec

from supervisor.config import ConfigError, StackConfig, check_worker, fill_gpu_fracs, resolve_worker
from supervisor.control import AttachRequest
from supervisor.placement import Cpus, PlacementError, check_cpus
from workers.config import WorkerConfig


def next_worker_name(kind: str, taken: Collection[str]) -> str:
    """``KIND-N`` with the lowest N not taken: chat-1 beside chat-0."""
    n = 0
    while f"{kind}-{n}" in taken:
        n += 1
    return f"{kind}-{n}"


def attached_worker(
    cfg: StackConfig, workers: Sequence[WorkerConfig], request: AttachRequest, taken: Collection[str],
    host_cpus: Cpus = (),
) -> WorkerConfig:
    """The resolved WorkerConfig for ``request``; ConfigError (one line) if it cannot run.

    ``cfg`` is the resolved stack, ``workers`` the workers the supervisor runs now, ``taken``
    every process name in use (workers, broker, wsfront), ``host_cpus`` the cores it may pin to."""
    replace = msgspec.structs.replace
    if cfg.wsfront.deploy_mode not in ("both", request.kind):
        raise ConfigError(f"attach: the front serves {cfg.wsfront.deploy_mode} turns only (DEPLOY_MODE); "
                          f"a {request.kind} worker would get none")
    name = request.name or next_worker_name(request.kind, taken)
    template = next((w for w in workers if w.kind == request.kind), None)
    if template is None:
        if not request.model:
            raise ConfigError(f"attach: no {request.kind} worker to copy from; name a --model")
        worker = WorkerConfig(name=name, kind=request.kind)
    else:  # its own fields stay its own: where it connects comes from the stack again
        worker = replace(template, name=name, connect="", gpu_frac=0.0)
    changes: dict[str, object] = {"gpu_frac": request.gpu_frac, "cpus": request.cpus}
    for field in ("engine", "model", "device", "python"):
        if value := getattr(request, field):
            changes[field] = value
    if request.capacity:
        changes["capacity"] = request.capacity
    if request.engine and template is not None and request.engine != template.engine:
        changes["python"] = request.python  # the template's interpreter was for its engine
    worker = replace(worker, **changes)
    if worker.device.endswith(":auto"):
        raise ConfigError(f"attach: device {worker.device!r} is for [[workers]] tables; "
                          "attach one worker to one device (cuda:N)")
    if not 0.0 <= worker.gpu_frac <= 1.0:
        raise ConfigError(f"attach: gpu_frac {worker.gpu_frac:g} is not in [0, 1]")
    if name in taken:
        raise ConfigError(f"attach: a process named {name!r} already runs (detach it, or pick --name)")
    try:
        check_worker(worker, set())
        check_cpus(worker, host_cpus)
    except (ConfigError, PlacementError) as e:
        raise ConfigError("attach: " + str(e).removeprefix("[[workers]] ")) from None
    worker = resolve_worker(worker, broker=cfg.broker, front=cfg.wsfront,
                            model_cache=cfg.supervisor.model_cache)
    try:
        *_, worker = fill_gpu_fracs([*workers, worker])
    except ConfigError as e:
        raise ConfigError(f"attach: {e} (attach --gpu-frac, or another device)") from None
    return worker
