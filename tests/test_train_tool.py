"""python -m workers.train_tool: the metrics it reports, its batches, its one-line refusal
of bad data, and a whole (tiny) fit that writes a servable directory with metrics.json."""

from __future__ import annotations

import json
import random

import pytest

from workers.train_tool import report, score
from workers.train_tool.__main__ import main
from workers.train_tool.fit import batches


def test_scores_count_yes_as_the_positive_label():
    truth = ["yes", "yes", "yes", "no", "no", "no", "no", "yes"]
    guess = ["yes", "yes", "no", "no", "yes", "no", "no", "yes"]
    s = score(truth, guess)
    assert (s.true_positive, s.false_positive, s.true_negative, s.false_negative) == (3, 1, 3, 1)
    assert s.accuracy == 0.75 and s.precision == 0.75 and s.recall == 0.75
    assert s.f1 == pytest.approx(0.75)


def test_scores_without_any_yes_are_zero_not_a_division_error():
    s = score(["no", "no"], ["no", "no"])
    assert (s.accuracy, s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        score(["no", "no"], ["no"])


def test_report_prints_the_scores_and_the_confusion_matrix():
    text = report("test", score(["yes", "no", "no", "yes"], ["yes", "yes", "no", "no"]))
    lines = text.splitlines()
    assert lines[0] == ("test (4 examples): accuracy 50.0%  precision 50.0%  recall 50.0%  "
                        "F1 0.500")
    assert lines[3].split() == ["no", "1", "1"] and lines[4].split() == ["yes", "1", "1"]


def test_batches_cover_every_example_once_in_similar_lengths():
    lengths = [random.Random(i).randint(3, 90) for i in range(300)]
    got = batches(lengths, 32, random.Random(7))
    assert sorted(i for b in got for i in b) == list(range(300))
    assert all(len(b) <= 32 for b in got)
    assert got == batches(lengths, 32, random.Random(7))  # the seed decides the order
    # Sorted within windows: a batch spans far less than the whole range of lengths.
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in got]
    assert sum(spans) / len(spans) < 30


@pytest.mark.parametrize("content, problem", [
    ('{"text": "hi", "label": "no"}\n{"text": "x", "label": "maybe"}\n', ':2: label must be'),
    ('{"text": "hi", "label": "no"}\nnot json\n', ':2: not valid JSON'),
    ('{"label": "yes"}\n', ':1: Object missing required field `text`'),
])
def test_bad_data_exits_2_with_one_line_naming_file_and_line(tmp_path, capsys, content, problem):
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    assert main(["--data", str(data), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{data}{problem}" in err
    assert not (tmp_path / "out").exists()


def test_a_bad_validation_file_is_named_too(tmp_path, capsys):
    data, validation = tmp_path / "data.jsonl", tmp_path / "val.jsonl"
    data.write_text('{"text": "hi", "label": "no"}\n')
    validation.write_text('{"text": "hi", "label": "no"}\n{"text": ""}\n')
    assert main(["--data", str(data), "--validation", str(validation), "--test", str(data),
                 "--out", str(tmp_path / "out")]) == 2
    assert f"{validation}:2:" in capsys.readouterr().err


def test_a_fit_writes_a_classifier_directory_with_its_metrics(tmp_path, tiny_models, capsys):
    lines = []
    for i in range(40):
        lines.append({"text": f"take screenshot number {i}", "label": "yes"})
        lines.append({"text": f"tell me joke number {i}", "label": "no"})
        lines.append({"text": "and this one", "history": f"User: look at my screen {i}",
                      "label": "yes"})
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in lines))
    out = tmp_path / "model"
    # The tiny tool model as the base: two layers, so the fit takes seconds.
    assert main(["--data", str(data), "--base", tiny_models["tool"], "--out", str(out),
                 "--epochs", "2", "--learning-rate", "3e-3", "--frozen-layers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/2: loss" in printed and "epoch 2/2: loss" in printed
    assert "held-out split (" in printed and "confusion" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    held = metrics["heldout"]
    assert held["examples"] == (held["true_positive"] + held["false_positive"]
                                + held["true_negative"] + held["false_negative"]) > 0
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["train_examples"] + held["examples"] < len(lines)  # validation split off

    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "no", 1: "yes"}


def test_the_same_seed_fits_the_same_weights(tmp_path, tiny_models):
    from safetensors.torch import load_file

    rows = [{"text": f"screenshot {i}", "label": "yes"} for i in range(20)]
    rows += [{"text": f"hello {i}", "label": "no"} for i in range(20)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    weights = []
    for run in ("a", "b"):
        assert main(["--data", str(data), "--base", tiny_models["tool"], "--out",
                     str(tmp_path / run), "--epochs", "1", "--threads", "1"]) == 0
        weights.append(load_file(tmp_path / run / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])


def test_a_fit_leaves_the_process_settings_as_it_found_them(tmp_path, tiny_models):
    # A worker builds its builtin model in-process, then serves with its own threads.
    import torch

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f"t{i}", "label": ("yes", "no")[i % 2]}) + "\n"
                            for i in range(30)))
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    assert main(["--data", str(data), "--base", tiny_models["tool"], "--out",
                 str(tmp_path / "m"), "--epochs", "1", "--threads", "1"]) == 0
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
