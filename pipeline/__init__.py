"""Pure domain logic of the text server (no I/O, no imports from our other packages):
personas, history, prompts, the streaming sanitizer, sampling validation and the turn plan."""

from .errors import PersonaError, PipelineError, PromptError, SamplingError
from .history import parse_history
from .personas import (
    DEFAULT_GENDER, DEFAULT_STYLE, DEFAULT_USER_IDENTITY, GENDERS, STYLES, USER_IDENTITIES, Persona,
    compose_persona, normalize_gender, normalize_style, normalize_user_identity,
)
from .prompt import (
    PromptLimits, Tokenizer, build_messages, check_persona, count_tokens, render_prefix,
    render_prompt, trim_history, trim_utterance,
)
from .sampling import (
    SAMPLING_KEYS, Bound, Sampling, SamplingBounds, SamplingChoice, SamplingRequest, check_sampling,
    layered, validate_sampling,
)
from .sanitizer import StreamSanitizer, sanitize
from .turn import DEPLOY_MODES, DeployMode, TurnPlan

__all__ = [
    "DEFAULT_GENDER", "DEFAULT_STYLE", "DEFAULT_USER_IDENTITY", "DEPLOY_MODES", "GENDERS",
    "SAMPLING_KEYS", "STYLES", "USER_IDENTITIES", "DeployMode", "Persona", "PersonaError",
    "Bound", "PipelineError", "PromptError", "PromptLimits", "Sampling", "SamplingBounds",
    "SamplingChoice", "SamplingRequest", "check_sampling", "layered", "SamplingError",
    "StreamSanitizer", "Tokenizer", "TurnPlan", "build_messages", "check_persona",
    "compose_persona", "count_tokens", "normalize_gender", "normalize_style",
    "normalize_user_identity", "parse_history", "render_prefix", "render_prompt", "sanitize",
    "trim_history", "trim_utterance", "validate_sampling",
]
