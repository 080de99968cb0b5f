"""``attach`` on the supervisor's side: the WorkerConfig for a worker asked for at runtime
(``attached_worker``, pure), and ``serve``, which adds it to the running set and starts it.

An attached worker is "one more like the ones I have": a copy of the stack's first worker of
its kind (engine, model, engine tables, limits), with the request's fields on top; without
one, the ``[[workers]]`` defaults, and then a model must be named. It is checked like a
``[[workers]]`` table, against the names in use, and against the GPU memory the running
workers already hold.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import msgspec

from supervisor import control
from supervisor.children import ChildSpec
from supervisor.config import ConfigError, StackConfig, check_worker, fill_gpu_fracs, resolve_worker
from supervisor.control import AttachRequest
from supervisor.placement import Cpus, PlacementError, check_cpus
from workers.config import WorkerConfig

if TYPE_CHECKING:
    from supervisor.daemon import Supervisor

log = logging.getLogger("supervisor")


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


def serve(sup: Supervisor, request: AttachRequest) -> control.Reply:
    """Add the worker ``request`` asks for and spawn it; it is RUNNING once it registers."""
    if sup.shutting_down:
        return control.Failed(message="supervisor is stopping")
    try:
        config = attached_worker(sup.cfg, sup.workers(), request, taken=set(sup.children),
                                 host_cpus=sup.host_cpus)
    except ConfigError as e:
        return control.Refused(message=str(e))
    spec = ChildSpec(config.name, config.kind, "workers", config, config.device)
    child = sup.new_child(spec)
    sup.run_dir.write_child_config(spec.name, spec.config_json())
    # workers before the front, as in the config: status lists them in that order
    front = {n: c for n, c in sup.children.items() if c.spec.kind == "wsfront"}
    sup.children = {**{n: c for n, c in sup.children.items() if n not in front}, spec.name: child, **front}
    log.info("%s: attached (%s engine %s, model %s, device %s)", spec.name, config.kind,
             config.resolved_engine(), config.model, config.device)
    now = sup.clock()
    sup.carry_out(child, child.life.start(), now)
    if not child.process.alive:
        return control.Failed(message=f"{spec.name}: {child.life.policy.describe(now)}")
    return control.Done(message=f"{spec.name} attached", pid=child.process.pid, name=spec.name)
