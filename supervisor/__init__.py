"""Runs the stack: config (supervisor.toml + env), spawning, GPU pinning, restarts, control socket.

``python -m supervisor start|stop|status|restart``; see ``supervisor.cli``.
"""

from supervisor.config import (
    ConfigError,
    StackConfig,
    SupervisorSettings,
    apply_env,
    load_config,
    load_stack,
    resolve,
)
from supervisor.lifecycle import Lifecycle
from supervisor.policy import RestartPolicy, State

__all__ = [
    "ConfigError",
    "Lifecycle",
    "RestartPolicy",
    "StackConfig",
    "State",
    "SupervisorSettings",
    "apply_env",
    "load_config",
    "load_stack",
    "resolve",
]
