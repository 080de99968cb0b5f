"""The control socket's verbs on the daemon's side: a request in, a reply out (for ``restart``,
once the new process is up: the lifecycle answers then). ``attach`` and ``detach`` have
modules of their own; ``status`` builds its rows here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from supervisor import attach, control, detach
from supervisor.child import Child
from supervisor.placement import format_cpus
from supervisor.policy import State
from supervisor.process import group_rss

if TYPE_CHECKING:
    from supervisor.daemon import Supervisor


def handle(sup: Supervisor, frames: list[bytes]) -> None:
    """One request off the ROUTER socket: frames are its envelope, then the body."""
    envelope, body = frames[:-1], frames[-1]
    try:
        request = control.request_decoder.decode(body)
    except Exception as e:  # a bad client must not take the supervisor down
        sup.reply(envelope, control.Failed(message=f"bad request: {e}"))
        return
    reply = _dispatch(sup, envelope, request)
    if reply is not None:
        sup.reply(envelope, reply)


def _dispatch(sup: Supervisor, envelope: list[bytes], request: control.Request) -> control.Reply | None:
    if isinstance(request, control.StatusRequest):
        return status(sup)
    if isinstance(request, control.StopRequest) and request.name in ("", "all"):
        sup.request_stop()
        return control.Done(message="stopping", pid=os.getpid())
    if isinstance(request, control.AttachRequest):
        return attach.serve(sup, request)
    child = sup.children.get(request.name)
    if child is None:
        known = ", ".join(sup.children)
        return control.Failed(message=f"no process named {request.name!r} (have {known})")
    if sup.shutting_down:
        return control.Failed(message="supervisor is stopping")
    now = sup.clock()
    grace = sup.settings.drain_grace_s if request.grace_s is None else max(request.grace_s, 0.0)
    if isinstance(request, control.DetachRequest):
        return detach.serve(sup, child, now, grace)
    if child.life.detached:
        return control.Failed(message=f"{child.name} is being detached")
    life, fresh = child.life, sup.broker_fresh(now)
    if isinstance(request, control.StopRequest):
        was_alive = life.alive
        sup.carry_out(child, life.stop_requested(now, grace, fresh), now)
        if was_alive:
            return control.Done(message=f"stopping {child.name}", pid=child.process.pid)
        return control.Done(message=f"{child.name} is not running")
    child.waiters.append(envelope)  # a RestartRequest: answered once it is up again
    sup.carry_out(child, life.restart_requested(now, grace, fresh), now)
    return None


def status(sup: Supervisor) -> control.StatusReply:
    now = sup.clock()
    return control.StatusReply(
        supervisor_pid=os.getpid(),
        stopping=sup.shutting_down,
        processes=[_row(sup, c, now) for c in sup.children.values()],
    )


def _row(sup: Supervisor, c: Child, now: float) -> control.ProcessInfo:
    alive = c.process.alive
    pid = c.process.pid if alive else None
    policy = c.life.policy
    detail = policy.describe(now)
    in_flight: int | None = None
    if c.spec.kind == "broker" and alive:
        in_flight = sup.view.in_flight(now)
    elif c.spec.is_worker and alive:
        entry = sup.view.worker(c.name, pid, now)
        in_flight = entry.load if entry is not None else None
        if c.life.draining:
            detail = "draining" + (f", {in_flight} in flight" if in_flight is not None else "")
        elif entry is None and policy.state in (State.STARTING, State.RUNNING):
            detail = ("not registered with the broker" if policy.registered
                      else "waiting to register with the broker")
    return control.ProcessInfo(
        name=c.name,
        kind=c.spec.kind,
        pid=pid,
        state=policy.state.value,
        uptime_s=round(policy.uptime(now), 3),
        restarts=policy.restarts,
        device=c.spec.device,
        exit_code=policy.last_exit_code,
        detail=detail,
        log=str(c.process.log_path),
        in_flight=in_flight,
        rss_bytes=group_rss(pid) if pid is not None else None,
        cpus=format_cpus(c.process.cpus) if pid is not None else "",
    )
