"""Tiny models built offline in seconds, so the stack serves with no model hub.

``tiny-chat``: a byte-level BPE tokenizer trained on text shipped here, a 2-layer Llama
with random weights and a chat template. ``tiny-tool``: a 2-layer BERT sequence
classifier (labels ``no``/``yes``) fitted for a few steps on labelled screenshot intents.
A model spec ``builtin:tiny-chat`` resolves to a directory under the cache dir, built on
first use; any other spec (HF id or local path) is returned unchanged.

    python -m workers.builtin_models --cache-dir DIR      # build both, print their paths
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
BUILD_VERSION = 2  # bump when a recipe changes

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


def resolve_model(spec: str, cache_dir: str | os.PathLike[str]) -> str:
    """Turn a model spec into something ``from_pretrained`` loads, building builtins."""
    if not spec.startswith(BUILTIN_PREFIX):
        return spec
    name = spec[len(BUILTIN_PREFIX):]
    builders = {"tiny-chat": build_tiny_chat, "tiny-tool": build_tiny_tool}
    if name not in builders:
        raise ValueError(f"unknown builtin model {spec!r}; known: {sorted(builders)}")
    # The version in the directory name makes a changed recipe rebuild old caches.
    target = Path(cache_dir).expanduser() / f"{name}-v{BUILD_VERSION}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build aside and rename into place: concurrent builders never see a half model.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        builders[name](staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/textserve/models"))
    args = parser.parse_args()
    for name in ("tiny-chat", "tiny-tool"):
        print(resolve_model(BUILTIN_PREFIX + name, args.cache_dir))


if __name__ == "__main__":
    main()
