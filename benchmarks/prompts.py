"""The turns every benchmark sends: the same utterances and the default persona, so numbers
from different benchmarks describe the same work."""

from __future__ import annotations

from pipeline import compose_persona

UTTERANCES = [
    "hey, how was your day?", "tell me something fun about octopuses",
    "what should I cook tonight?", "can you help me plan a trip to Lisbon?",
    "I can't sleep, talk to me", "what's your favourite song?",
    "explain black holes like I'm five", "give me a pep talk before my exam",
]
PERSONA = compose_persona(None, None, None).text
