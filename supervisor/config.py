"""The stack's configuration: ``supervisor.toml`` decoded into Structs, env overrides, endpoints.

Three steps, each testable alone: ``load_config(path)`` (file -> StackConfig),
``apply_env(cfg, env)`` (the Yap server's env vars, pure) and ``resolve(cfg)`` (run dir, endpoints,
derived fields, validation). ``load_stack(path, env)`` runs all three.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from broker.config import BrokerConfig
from broker.curve import is_tcp
from supervisor.keys import LOCAL_CLIENT
from supervisor.placement import AUTO_DEVICE, Host, PlacementError, check_cpus, expand_gpu_workers
from workers import engines
from workers.config import WorkerConfig
from wsfront.config import FrontConfig
from wsfront.env import SettingError, apply_front_env
from wsfront.env import env_bool as _bool
from wsfront.env import env_choice as _choice
from wsfront.env import env_float as _float
from wsfront.env import env_int as _int

import tomllib

CURVE_OFF = "none"  # [broker] curve_dir that leaves tcp:// endpoints without CurveZMQ
# sun_path is 108 bytes on Linux (104 on macOS); keep a margin for the NUL and zmq's own checks.
IPC_PATH_MAX = 100
CHAT_ENGINES = tuple(engines.CHAT_ENGINES)  # the engines the workers can load, by kind
TOOL_ENGINES = tuple(engines.TOOL_ENGINES)
KV_DTYPES = ("auto", "fp8", "fp8_e5m2", "fp8_e4m3", "int8")
TRT_DTYPES = ("float16", "bfloat16", "float32")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE = re.compile(r"^(cpu|cuda|cuda:\d+(,\d+)*)$")
_RESERVED_NAMES = ("broker", "wsfront", "supervisor")


# A bad config file or env var; ``str(err)`` is one line meant for an operator.
ConfigError = SettingError


class SupervisorSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    run_dir: str = "run"  # pid file, sockets, logs, child configs; relative to the config file
    start_timeout_s: float = 600.0  # `start` waits this long for /healthz
    stop_timeout_s: float = 10.0  # per shutdown phase, then SIGKILL
    startsecs: float = 1.0  # a child alive this long counts as RUNNING
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    startretries: int = 10  # consecutive failures before startsecs -> FATAL
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 3
    model_cache: str = "~/.cache/textserve/models"
    # `restart`/`stop` of a worker: its turns may finish this long, then fail (worker_restarting)
    drain_grace_s: float = 10.0
    # a registered worker the broker has not heard from this long (alive but stuck) is
    # SIGKILLed and restarted; 0 disables. Its turns already failed at heartbeat expiry (3 s).
    hang_timeout_s: float = 10.0


class StackConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    supervisor: SupervisorSettings = msgspec.field(default_factory=SupervisorSettings)
    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    wsfront: FrontConfig = msgspec.field(default_factory=FrontConfig)
    workers: list[WorkerConfig] = msgspec.field(default_factory=list)


def load_config(path: str | os.PathLike[str]) -> StackConfig:
    """Decode the file; a relative run_dir becomes absolute against the file's directory."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    try:
        cfg = msgspec.convert(raw, StackConfig)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{path}: {_describe(str(e))}") from None
    _refuse_own_heartbeats(raw, path)
    run_dir = Path(os.path.expanduser(cfg.supervisor.run_dir))
    if not run_dir.is_absolute():
        run_dir = path.resolve().parent / run_dir
    sup = msgspec.structs.replace(cfg.supervisor, run_dir=str(run_dir))
    curve_dir = cfg.broker.curve_dir
    if curve_dir and curve_dir != CURVE_OFF and not os.path.isabs(os.path.expanduser(curve_dir)):
        cfg = msgspec.structs.replace(cfg, broker=msgspec.structs.replace(
            cfg.broker, curve_dir=str(path.resolve().parent / curve_dir)))
    # A worker's interpreter given as a relative path is relative to the file too.
    workers = [msgspec.structs.replace(w, python=str(path.resolve().parent / w.python))
               if "/" in w.python and not os.path.isabs(os.path.expanduser(w.python)) else w
               for w in cfg.workers]
    return msgspec.structs.replace(cfg, supervisor=sup, workers=workers)


_HEARTBEAT_KEYS = ("heartbeat_interval_s", "heartbeat_liveness")


def _refuse_own_heartbeats(raw: dict[str, object], path: Path) -> None:
    """The heartbeat is the broker's: workers and the front get ``[broker]``'s (resolve), so a
    value of their own would be silently replaced; say so instead."""
    tables: list[tuple[str, object]] = [("wsfront", raw.get("wsfront", {}))]
    tables += [(f"workers[{i}]", w) for i, w in enumerate(raw.get("workers", []))]  # type: ignore[arg-type]
    for where, table in tables:
        for key in _HEARTBEAT_KEYS:
            if isinstance(table, dict) and key in table:
                raise ConfigError(f"{path}: {where}.{key}: the heartbeat is set once, in [broker] "
                                  "(heartbeat_interval_s, liveness)")


def _describe(message: str) -> str:
    """msgspec's "Object contains unknown field `prot` - at `$.wsfront`" -> "unknown key wsfront.prot"."""
    where = ""
    if (m := re.search(r" - at `\$\.?([^`]*)`$", message)) is not None:
        where, message = m.group(1), message[: m.start()]
    if (m := re.match(r"Object (contains unknown|missing required) field `([^`]*)`", message)) is not None:
        key = f"{where}.{m.group(2)}" if where else m.group(2)
        return f"{'unknown' if m.group(1) == 'contains unknown' else 'missing required'} key {key}"
    return f"{where or '(top level)'}: {message}"


def apply_env(cfg: StackConfig, env: Mapping[str, str]) -> StackConfig:
    """Apply the env vars users of the Yap server know on top of the file. Pure: ``env`` is passed in, cfg is not mutated."""
    replace = msgspec.structs.replace
    front, sup = cfg.wsfront, cfg.supervisor

    front = apply_front_env(front, env)

    if run_dir := env.get("RUN_DIR", "").strip():
        sup = replace(sup, run_dir=run_dir)  # relative: against the current directory (resolve)

    workers = list(cfg.workers)
    deploy = _choice(env, "DEPLOY_MODE", ("both", "chat", "tool"))
    if deploy is not None:
        kinds = ("chat", "tool") if deploy == "both" else (deploy,)
        for kind in kinds:
            if not any(w.kind == kind for w in workers):
                raise ConfigError(f"DEPLOY_MODE={deploy}: no [[workers]] of kind {kind!r} configured")
        workers = [w for w in workers if w.kind in kinds]

    workers = _apply_engine_env(workers, env)

    chat_model = env.get("CHAT_MODEL", "").strip()
    tool_model = env.get("TOOL_MODEL", "").strip()
    engine = _choice(env, "INFERENCE_ENGINE", CHAT_ENGINES)
    history = _int(env, "HISTORY_MAX_TOKENS", 1, 1 << 24)
    utterance = _int(env, "USER_UTT_MAX_TOKENS", 1, 1 << 24)
    persona_budget = _int(env, "CHAT_PROMPT_MAX_TOKENS", 1, 1 << 24)
    exact_trim = _bool(env, "EXACT_TOKEN_TRIM")
    tool_history = _int(env, "TOOL_HISTORY_TOKENS", 0, 1 << 24)
    for i, w in enumerate(workers):
        if w.kind == "chat":
            changes: dict[str, object] = {}
            if chat_model:
                changes["model"] = chat_model
            if engine is not None:
                changes["engine"] = engine
            if history is not None:
                changes["history_max_tokens"] = history
            if utterance is not None:
                changes["user_utt_max_tokens"] = utterance
            if persona_budget is not None:
                changes["chat_prompt_max_tokens"] = persona_budget
            if exact_trim is not None:
                changes["exact_token_trim"] = exact_trim
            workers[i] = replace(w, **changes)
        else:
            tool_changes: dict[str, object] = {}
            if tool_model:
                tool_changes["model"] = tool_model
            if tool_history is not None:
                tool_changes["tool_history_tokens"] = tool_history
            workers[i] = replace(w, **tool_changes)

    return replace(cfg, supervisor=sup, wsfront=front, workers=workers)


# Engine settings by env var, as the single-process servers named them: env var -> (kinds, field path, parser). A dotted path names a
# field of the worker's [workers.vllm] / [workers.trt] table.
_Parse = Callable[[Mapping[str, str], str], object]
_ENGINE_ENV: dict[str, tuple[tuple[str, ...], str, _Parse]] = {
    "CHAT_GPU_FRAC": (("chat",), "gpu_frac", lambda e, v: _float(e, v, 0.01, 1.0)),
    "TOOL_GPU_FRAC": (("tool",), "gpu_frac", lambda e, v: _float(e, v, 0.01, 1.0)),
    "CHAT_MAX_LEN": (("chat",), "max_model_len", lambda e, v: _int(e, v, 16, 1 << 24)),
    "STREAM_FLUSH_MS": (("chat",), "stream_flush_ms", lambda e, v: _float(e, v, 0.0, 1000.0)),
    "QUANTIZATION": (("chat",), "quantization", lambda e, v: e.get(v, "").strip().lower() or None),
    "KV_DTYPE": (("chat",), "kv_dtype", lambda e, v: _choice(e, v, KV_DTYPES)),
    "ENFORCE_EAGER": (("chat",), "vllm.enforce_eager", _bool),
    "CACHE_RESET_INTERVAL_SECONDS": (("chat",), "vllm.cache_reset_interval_s",
                                     lambda e, v: _float(e, v, 0.0, 1e9)),
    "TRTLLM_ENGINE_DIR": (("chat",), "trt.engine_dir", lambda e, v: e.get(v, "").strip() or None),
    "TRT_CHECKPOINT_DIR": (("chat",), "trt.checkpoint_dir", lambda e, v: e.get(v, "").strip() or None),
    "TRT_MAX_BATCH_SIZE": (("chat",), "trt.max_batch_size", lambda e, v: _int(e, v, 1, 1 << 16)),
    "TRT_BATCH_SIZE": (("chat",), "trt.batch_size", lambda e, v: _int(e, v, 1, 1 << 16)),
    "TRT_MAX_INPUT_LEN": (("chat",), "trt.max_input_len", lambda e, v: _int(e, v, 1, 1 << 24)),
    "TRT_MAX_OUTPUT_LEN": (("chat",), "trt.max_output_len", lambda e, v: _int(e, v, 1, 1 << 24)),
    "TRT_DTYPE": (("chat",), "trt.dtype", lambda e, v: _choice(e, v, TRT_DTYPES)),
    "TRT_KV_FREE_GPU_FRAC": (("chat",), "trt.kv_free_gpu_frac", lambda e, v: _float(e, v, 0.01, 1.0)),
    "TRT_KV_ENABLE_BLOCK_REUSE": (("chat",), "trt.kv_block_reuse", _bool),
}


def _apply_engine_env(workers: list[WorkerConfig], env: Mapping[str, str]) -> list[WorkerConfig]:
    replace = msgspec.structs.replace
    out = list(workers)
    for var, (kinds, path, parse) in _ENGINE_ENV.items():
        value = parse(env, var)
        if value is None:
            continue
        for i, w in enumerate(out):
            if w.kind not in kinds:
                continue
            if "." in path:
                table, field = path.split(".")
                out[i] = replace(w, **{table: replace(getattr(w, table), **{field: value})})
            else:
                out[i] = replace(w, **{path: value})
    return out


def default_gpu_frac(kind: str, shares_gpu: bool) -> float:
    """The usual GPU split: chat 0.70 and tool 0.20 on a shared GPU, 0.90 for a worker alone."""
    if not shares_gpu:
        return 0.90
    return 0.70 if kind == "chat" else 0.20


def fill_gpu_fracs(workers: list[WorkerConfig]) -> list[WorkerConfig]:
    """Give every GPU worker without an explicit ``gpu_frac`` the usual split, and refuse
    explicit fractions that add up to more than one GPU."""
    def gpus(w: WorkerConfig) -> set[str]:
        if w.device == "cpu":
            return set()
        ids = w.device.partition(":")[2]
        return set(ids.split(",")) if ids else {"0"}

    out = []
    for w in workers:
        mine = gpus(w)
        shares = any(o is not w and mine & gpus(o) for o in workers)
        frac = w.gpu_frac or (default_gpu_frac(w.kind, shares) if mine else 0.0)
        out.append(msgspec.structs.replace(w, gpu_frac=frac))
    for gpu in sorted({g for w in out for g in gpus(w)}):
        total = sum(w.gpu_frac for w in out if gpu in gpus(w))
        if total > 1.0 + 1e-9:
            names = ", ".join(w.name for w in out if gpu in gpus(w))
            raise ConfigError(f"GPU {gpu}: gpu_frac of {names} adds up to {total:.2f} (> 1.0); "
                              "lower CHAT_GPU_FRAC / TOOL_GPU_FRAC or gpu_frac")
    return out


def run_dir_of(cfg: StackConfig, env: Mapping[str, str]) -> Path:
    """The run dir alone (file + RUN_DIR): what stop/status need, without TEXT_API_KEY."""
    return Path(os.path.expanduser(env.get("RUN_DIR", "").strip() or cfg.supervisor.run_dir)).absolute()


def curve_dir_of(cfg: StackConfig, env: Mapping[str, str]) -> Path:
    """Where the CurveZMQ keys are (file + RUN_DIR): ``[broker] curve_dir``, else RUN_DIR/keys."""
    if cfg.broker.curve_dir and cfg.broker.curve_dir != CURVE_OFF:
        return Path(os.path.expanduser(cfg.broker.curve_dir)).absolute()
    return run_dir_of(cfg, env) / "keys"


def ipc_endpoint(run_dir: Path, socket_name: str) -> str:
    endpoint = f"ipc://{run_dir}/{socket_name}"
    if len(endpoint) - len("ipc://") > IPC_PATH_MAX:
        raise ConfigError(
            f"run dir {str(run_dir)!r} is too long for unix sockets: {run_dir / socket_name} "
            f"exceeds {IPC_PATH_MAX} characters; set a shorter RUN_DIR or [supervisor] run_dir"
        )
    return endpoint


def connect_address(endpoint: str) -> str:
    """A bind address usable for connecting: tcp://0.0.0.0:P and tcp://*:P become 127.0.0.1."""
    for wildcard in ("tcp://0.0.0.0:", "tcp://*:"):
        if endpoint.startswith(wildcard):
            return "tcp://127.0.0.1:" + endpoint[len(wildcard):]
    return endpoint


def resolve(cfg: StackConfig, host: Host = Host()) -> StackConfig:
    """Fill run dir, endpoints and derived fields; check what no single Struct can check alone.
    ``host`` (CPUs and GPUs; unknown by default) expands ``cuda:auto`` tables and checks ``cpus``."""
    replace = msgspec.structs.replace
    run_dir = Path(os.path.expanduser(cfg.supervisor.run_dir)).absolute()
    ipc_endpoint(run_dir, "control.ipc")  # checks the length before anything is created
    model_cache = os.path.expanduser(cfg.supervisor.model_cache)
    sup = replace(cfg.supervisor, run_dir=str(run_dir), model_cache=model_cache)
    _check_settings(sup)
    if cfg.broker.heartbeat_interval_s <= 0 or cfg.broker.liveness < 1:
        raise ConfigError("[broker] needs heartbeat_interval_s > 0 and liveness >= 1")

    broker = replace(
        cfg.broker,
        frontend=cfg.broker.frontend or ipc_endpoint(run_dir, "front.ipc"),
        backend=cfg.broker.backend or ipc_endpoint(run_dir, "workers.ipc"),
    )
    # tcp:// endpoints speak CurveZMQ with the keys in curve_dir (default RUN_DIR/keys), unless
    # it is "none"; ipc:// ones are guarded by the run dir's mode.
    tcp = is_tcp(broker.frontend) or is_tcp(broker.backend)
    curve_dir = "" if not tcp or broker.curve_dir == CURVE_OFF else os.path.abspath(
        os.path.expanduser(broker.curve_dir or str(run_dir / "keys")))
    broker = replace(broker, curve_dir=curve_dir)
    front = replace(cfg.wsfront, broker=cfg.wsfront.broker or connect_address(broker.frontend),
                    **heartbeat_of(broker))
    if curve_dir and is_tcp(front.broker) and not front.curve_dir:
        front = replace(front, curve_dir=os.path.join(curve_dir, LOCAL_CLIENT))

    if not cfg.workers:
        raise ConfigError("no [[workers]] configured: add at least one chat or tool worker")
    seen: set[str] = set()
    workers = []
    try:
        expanded = expand_gpu_workers(cfg.workers, host.gpus)  # before the GPU split below
        for w in expanded:
            check_cpus(w, host.cpus)
    except PlacementError as e:
        raise ConfigError(str(e)) from None
    for w in expanded:
        check_worker(w, seen)
        workers.append(resolve_worker(w, broker=broker, front=front, model_cache=model_cache))
    workers = fill_gpu_fracs(workers)
    kinds = {w.kind for w in workers}
    front = replace(front, deploy_mode="both" if len(kinds) == 2 else next(iter(kinds)))
    return replace(cfg, supervisor=sup, broker=broker, wsfront=front, workers=workers)


def heartbeat_of(broker: BrokerConfig) -> dict[str, float | int]:
    """The heartbeat every worker and front keeps with this broker: set once, in ``[broker]``,
    so that both sides judge silence alike."""
    return {"heartbeat_interval_s": broker.heartbeat_interval_s, "heartbeat_liveness": broker.liveness}


def resolve_worker(w: WorkerConfig, *, broker: BrokerConfig, front: FrontConfig, model_cache: str) -> WorkerConfig:
    """A worker's derived fields: where it connects (and with which keys), its heartbeat, its
    model cache, trt's reply budget."""
    replace = msgspec.structs.replace
    default_cache = WorkerConfig(name="-", kind="chat").model_cache
    w = replace(
        w,
        connect=w.connect or connect_address(broker.backend),
        model_cache=model_cache if w.model_cache == default_cache else os.path.expanduser(w.model_cache),
        **heartbeat_of(broker),
    )
    if broker.curve_dir and is_tcp(w.connect) and not w.curve_dir:
        w = replace(w, curve_dir=os.path.join(broker.curve_dir, LOCAL_CLIENT))
    # A TensorRT-LLM engine bakes its longest reply in: by default, the front's reply budget.
    if w.kind == "chat" and w.trt.max_output_len == 0:
        w = replace(w, trt=replace(w.trt, max_output_len=front.chat_max_out))
    return w


def _check_settings(sup: SupervisorSettings) -> None:
    for key in ("start_timeout_s", "stop_timeout_s", "backoff_initial_s", "backoff_max_s"):
        if getattr(sup, key) <= 0:
            raise ConfigError(f"[supervisor] {key} must be > 0")
    for key in ("drain_grace_s", "hang_timeout_s"):
        if getattr(sup, key) < 0:
            raise ConfigError(f"[supervisor] {key} must be >= 0")
    if sup.startsecs < 0 or sup.startretries < 1 or sup.log_backups < 0 or sup.log_max_bytes < 1024:
        raise ConfigError(
            "[supervisor] needs startsecs >= 0, startretries >= 1, log_backups >= 0, log_max_bytes >= 1024"
        )


def check_worker(w: WorkerConfig, seen: set[str]) -> None:
    """One ``[[workers]]`` table (or ``attach`` request) that can run; ``seen``: names taken."""
    if not _NAME.match(w.name) or w.name in _RESERVED_NAMES:
        raise ConfigError(f"[[workers]] name {w.name!r}: use letters, digits, '.', '_', '-' (not broker/wsfront)")
    if w.name in seen:
        raise ConfigError(f"[[workers]] name {w.name!r} is used twice; worker names must be unique")
    seen.add(w.name)
    engines = CHAT_ENGINES if w.kind == "chat" else TOOL_ENGINES
    if w.engine and w.engine not in engines:
        raise ConfigError(f"[[workers]] {w.name}: engine {w.engine!r} is not a {w.kind} engine ({', '.join(engines)})")
    if not _DEVICE.match(w.device):
        raise ConfigError(f"[[workers]] {w.name}: device {w.device!r}: expected cpu, cuda or cuda:N[,M...]")
    if not w.model:
        raise ConfigError(f"[[workers]] {w.name}: model is empty (an HF id, a local path or a builtin: "
                              f"{'builtin:smollm2' if w.kind == 'chat' else 'builtin:screenshot-intent'})")
    if w.capacity < 1:
        raise ConfigError(f"[[workers]] {w.name}: capacity must be >= 1")
    if w.python and not (shutil.which(os.path.expanduser(w.python))):
        raise ConfigError(f"[[workers]] {w.name}: python {w.python!r} is not an executable "
                          "(make the engine's virtualenv first, e.g. scripts/vllm-venv.sh)")


def load_stack(path: str | os.PathLike[str], env: Mapping[str, str]) -> StackConfig:
    """File, then env, then endpoints: the one StackConfig the daemon runs."""
    cfg = apply_env(load_config(path), env)
    return resolve(cfg, Host.detect(env, gpus=any(w.device == AUTO_DEVICE for w in cfg.workers)))
