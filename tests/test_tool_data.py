"""The labelled screenshot-intent data: its JSONL loader (one line naming file:line for each
kind of bad line), the deterministic split, and the committed data set itself (what the
generator writes, its size, its proportion of "no", no phrasing shared by train and test)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from workers.train_tool import DataError, Example, load_examples, parse_lines, split_examples

DATA = Path(__file__).resolve().parent.parent / "data" / "screenshot_intent"


def load_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_examples(path)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("line, problem", [
    ('{"text": "hi", "label": "no"', "not valid JSON"),
    ('{"label": "no"}', "missing required field `text`"),
    ('{"text": "hi", "label": "maybe"}', 'label must be "yes" or "no"'),
    ('{"text": "hi"}', "missing required field `label`"),
    ('{"text": 3, "label": "no"}', "Expected `str`, got `int`"),
    ('{"text": "  ", "label": "no"}', "text is empty"),
    ('{"text": "hi", "label": "no", "lable": "yes"}', "unknown field `lable`"),
    ('["hi", "no"]', "not a JSON object"),
    ('{"text": "hi", "label": "yes", "history": 7}', "Expected `str`, got `int`"),
])
def test_a_bad_line_is_reported_with_its_file_and_line_number(tmp_path, line, problem):
    good = '{"text": "take a screenshot", "label": "yes"}\n\n'
    message = load_error(tmp_path, good + line + "\n")
    assert message.startswith(f"{tmp_path / 'bad.jsonl'}:3: ")
    assert problem in message


def test_an_empty_or_missing_file_is_one_line_naming_it(tmp_path):
    assert load_error(tmp_path, "\n\n") == f"{tmp_path / 'bad.jsonl'}: no examples"
    with pytest.raises(DataError, match=r"nowhere\.jsonl: cannot read"):
        load_examples(tmp_path / "nowhere.jsonl")


def test_history_is_optional_and_kept_when_given():
    got = parse_lines(['{"text": "and this one?", "history": "User: look at my screen", '
                       '"label": "yes"}', '{"text": "hello", "label": "no"}'], "mem")
    assert got == [Example("and this one?", "yes", "User: look at my screen"),
                   Example("hello", "no", "")]


def test_split_is_deterministic_and_keeps_one_utterance_on_one_side():
    examples = [Example(f"utterance number {i}", "yes" if i % 3 else "no") for i in range(400)]
    # The same words with other punctuation, case or history go where the plain ones go.
    examples += [Example(f"Utterance number {i}!", "no", "User: hi") for i in range(400)]
    train, validation, test = split_examples(examples)
    assert (train, validation, test) == split_examples(list(examples))
    assert len(train) + len(validation) + len(test) == 800
    assert 40 <= len(test) <= 120 and 40 <= len(validation) <= 120

    def words(part):
        return {re.sub(r"[^a-z0-9]+", " ", ex.text.lower()).strip() for ex in part}
    assert not words(train) & words(test)
    assert not words(train) & words(validation)
    assert not words(validation) & words(test)


def test_split_can_leave_a_part_empty():
    examples = [Example(f"u{i}", "no") for i in range(50)]
    train, validation, test = split_examples(examples, validation=0.0, test=0.2)
    assert validation == [] and test and len(train) + len(test) == 50


# ------------------------------------------------------------------ the committed data set

def committed() -> dict[str, list[Example]]:
    return {split: load_examples(DATA / f"{split}.jsonl")
            for split in ("train", "validation", "test")}


def test_committed_files_are_what_the_generator_writes(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("screenshot_intent_generate",
                                                  DATA / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, generate)  # its dataclass looks itself up
    spec.loader.exec_module(generate)
    generate.write(tmp_path)
    generate.write(tmp_path / "again")  # twice in one process: the same files
    for split in ("train", "validation", "test"):
        written = (tmp_path / f"{split}.jsonl").read_bytes()
        assert written == (tmp_path / "again" / f"{split}.jsonl").read_bytes()
        assert written == (DATA / f"{split}.jsonl").read_bytes(), (
            f"{split}.jsonl is stale: run python data/screenshot_intent/generate.py")


def test_committed_data_is_large_mostly_no_and_covers_history():
    data = committed()
    everything = [ex for part in data.values() for ex in part]
    assert len(everything) >= 2000
    labels = Counter(ex.label for ex in everything)
    assert 0.60 <= labels["no"] / len(everything) <= 0.72  # most voice turns ask for nothing
    for part in data.values():
        with_history = Counter(ex.label for ex in part if ex.history)
        assert with_history["yes"] >= 20 and with_history["no"] >= 20


def test_the_same_words_take_both_labels_by_history():
    # "and this one?" after a screen question is yes; after ordinary chat, no.
    by_text: dict[str, set[str]] = {}
    for ex in committed()["train"]:
        if ex.history:
            by_text.setdefault(ex.text, set()).add(ex.label)
    assert sum(labels == {"yes", "no"} for labels in by_text.values()) >= 20


def test_no_utterance_of_the_test_split_is_in_training():
    data = committed()

    def norm(text: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()
    trained = {norm(ex.text) for ex in data["train"]}
    assert not [ex.text for ex in data["test"] if norm(ex.text) in trained]


def test_every_committed_line_is_a_compact_json_object():
    for split in ("train", "validation", "test"):
        for line in (DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            assert set(row) <= {"text", "history", "label"} and row["label"] in ("yes", "no")
