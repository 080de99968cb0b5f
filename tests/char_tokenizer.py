"""A tokenizer for tests of prompt budgets: one token per character, and a chat template that
shows the roles plainly (``<system>...<user>...<assistant>``)."""

from __future__ import annotations


class CharTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False) -> str:
        text = "".join(f"<{m['role']}>{m['content']}" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")
