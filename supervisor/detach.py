"""``detach`` on the supervisor's side: a worker is taken down like ``stop NAME`` (drained
first), and once it is down it leaves the running set, its config file and ``status``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from supervisor import control
from supervisor.child import Child

if TYPE_CHECKING:
    from supervisor.daemon import Supervisor

log = logging.getLogger("supervisor")


def serve(sup: Supervisor, child: Child, now: float, grace_s: float) -> control.Reply:
    if not child.spec.is_worker:
        return control.Refused(message=f"{child.name} is not a worker; only workers can be detached")
    sup.carry_out(child, child.life.detach_requested(now, grace_s, sup.broker_fresh(now)), now)
    return control.Done(message=f"detaching {child.name}", pid=child.process.pid, name=child.name)


def forget_detached(sup: Supervisor) -> None:
    """Detached workers that are down leave the set."""
    for name in [n for n, c in sup.children.items() if c.life.detached and not c.life.alive]:
        del sup.children[name]
        sup.run_dir.child_config(name).unlink(missing_ok=True)
        log.info("%s: detached", name)
