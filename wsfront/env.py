"""The front's env vars, by the names users of the single-process Yap server know, on top
of a ``FrontConfig``: the one place that decides them (env over the file), for the supervisor
and for ``python -m wsfront`` alike. Pure: the env is passed in."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from .config import FrontConfig


class SettingError(ValueError):
    """A bad setting (an env var, a config key); ``str(err)`` is one line for an operator."""


def env_int(env: Mapping[str, str], var: str, lo: int, hi: int) -> int | None:
    value = env.get(var, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise SettingError(f"{var}={value!r}: expected an integer") from None
    if not lo <= n <= hi:
        raise SettingError(f"{var}={value!r}: expected an integer in [{lo}, {hi}]")
    return n


def env_float(env: Mapping[str, str], var: str, lo: float, hi: float) -> float | None:
    value = env.get(var, "").strip()
    if not value:
        return None
    try:
        x = float(value)
    except ValueError:
        raise SettingError(f"{var}={value!r}: expected a number") from None
    if not lo <= x <= hi:
        raise SettingError(f"{var}={value!r}: expected a number in [{lo:g}, {hi:g}]")
    return x


# The front's connection guards: env var -> (FrontConfig field, integer?)
_FRONT_LIMITS: dict[str, tuple[str, bool]] = {
    "MAX_CONCURRENT_CONNECTIONS": ("max_connections", True),
    "WS_HANDSHAKE_ACQUIRE_TIMEOUT_S": ("handshake_acquire_timeout_s", False),
    "WS_IDLE_TIMEOUT_S": ("idle_timeout_s", False),
    "WS_MAX_SEND_QUEUE_BYTES": ("max_send_queue_bytes", True),
    "WS_SOCKET_SEND_BUFFER_BYTES": ("socket_send_buffer_bytes", True),
    "WS_MAX_MESSAGES_PER_WINDOW": ("max_messages_per_window", True),
    "WS_MESSAGE_WINDOW_SECONDS": ("message_window_s", False),
    "WS_MAX_CANCELS_PER_WINDOW": ("max_cancels_per_window", True),
    "WS_CANCEL_WINDOW_SECONDS": ("cancel_window_s", False),
    "CHAT_PROMPT_UPDATE_MAX_PER_WINDOW": ("persona_updates_per_window", True),
    "CHAT_PROMPT_UPDATE_WINDOW_SECONDS": ("persona_update_window_s", False),
}


# Ranges of the client's sampling knobs on /ws: env CHAT_<KNOB>_MIN / _MAX -> sampling_ranges.
_SAMPLING_KNOBS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                   "presence_penalty", "frequency_penalty")


def _sampling_ranges(front: FrontConfig, env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    ranges = dict(front.sampling_ranges)
    for knob in _SAMPLING_KNOBS:
        low, high = ranges.get(knob, (None, None))
        env_low = env_float(env, f"CHAT_{knob.upper()}_MIN", -1e6, 1e6)
        env_high = env_float(env, f"CHAT_{knob.upper()}_MAX", -1e6, 1e6)
        low = env_low if env_low is not None else low
        high = env_high if env_high is not None else high
        if low is None and high is None:
            continue
        if low is None or high is None:
            raise SettingError(f"CHAT_{knob.upper()}_MIN and _MAX: set both, or neither "
                              f"([wsfront] sampling_ranges has no {knob} to complete it)")
        if low > high:
            raise SettingError(f"CHAT_{knob.upper()}_MIN={low:g} is above _MAX={high:g}")
        ranges[knob] = (low, high)
    return ranges


def env_bool(env: Mapping[str, str], var: str) -> bool | None:
    value = env.get(var, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{var}={env[var]!r}: expected 1/0 or true/false")


def env_choice(env: Mapping[str, str], var: str, choices: tuple[str, ...]) -> str | None:
    value = env.get(var, "").strip().lower()
    if not value:
        return None
    if value not in choices:
        raise SettingError(f"{var}={env[var]!r}: expected one of {', '.join(choices)}")
    return value


def apply_front_env(front: FrontConfig, env: Mapping[str, str]) -> FrontConfig:
    """``front`` with the env's settings applied; ``SettingError`` names a bad one."""
    replace = msgspec.structs.replace
    api_key = env.get("TEXT_API_KEY", "") or front.api_key
    if not api_key:
        raise SettingError("TEXT_API_KEY is required")
    front = replace(front, api_key=api_key)
    if (port := env_int(env, "WS_PORT", 1, 65535)) is not None:
        front = replace(front, port=port)
    if (processes := env_int(env, "WS_FRONT_PROCESSES", 1, 256)) is not None:
        front = replace(front, processes=processes)
    if (max_out := env_int(env, "CHAT_MAX_OUT", 1, 1 << 20)) is not None:
        front = replace(front, chat_max_out=max_out)
    if (concurrent := env_bool(env, "CONCURRENT_MODEL_CALL")) is not None:
        front = replace(front, concurrent_model_call=concurrent)
    for var, field in (("WS_CANCEL_SENTINEL", "cancel_sentinel"), ("WS_END_SENTINEL", "end_sentinel")):
        if var in env:
            if not env[var]:
                raise SettingError(f"{var}: must not be empty")
            front = replace(front, **{field: env[var]})
    for var, (field, integer) in _FRONT_LIMITS.items():
        value = env_int(env, var, 0, 1 << 30) if integer else env_float(env, var, 0.0, 1e9)
        if value is not None:
            front = replace(front, **{field: value})
    if (idle_code := env_int(env, "WS_CLOSE_IDLE_CODE", 1000, 4999)) is not None:
        front = replace(front, idle_close_code=idle_code)
    front = replace(front, sampling_ranges=_sampling_ranges(front, env))
    if front.max_connections < 1:
        raise SettingError("MAX_CONCURRENT_CONNECTIONS must be at least 1")
    if front.processes < 1:
        raise SettingError("[wsfront] processes (WS_FRONT_PROCESSES) must be at least 1")
    if front.max_send_queue_bytes < 4096:
        raise SettingError("WS_MAX_SEND_QUEUE_BYTES (max_send_queue_bytes) must be at least 4096")
    if front.cancel_sentinel == front.end_sentinel:
        raise SettingError("WS_CANCEL_SENTINEL and WS_END_SENTINEL must differ")
    return front
