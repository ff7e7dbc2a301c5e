"""Model loads: one slow load never blocks another user; bad paths are refused up front."""

from __future__ import annotations

import os
import threading
import time

import pytest

import app.state as state
from app.state import ModelRegistry
from tacq.errors import TacqError
from tacq.models import check_model_dir


def test_a_hung_load_does_not_delay_other_users(monkeypatch, tiny_lm, tmp_path):
    release, started, loads = threading.Event(), threading.Event(), []

    def fake_load(source, progress=None):
        loads.append(source)
        if source.endswith("slow"):
            started.set()
            release.wait(30)  # a stalled mount or a huge model
        return tiny_lm

    monkeypatch.setattr(state, "load_model", fake_load)
    registry = ModelRegistry()
    registry.preload_default("default")
    (tmp_path / "slow").mkdir()
    (tmp_path / "other").mkdir()
    slow = threading.Thread(target=registry.get, args=(str(tmp_path / "slow"),))
    slow.start()
    assert started.wait(10)
    t = time.perf_counter()
    assert registry.get("default") is tiny_lm  # another user's page load
    assert registry.get(str(tmp_path / "other")) is tiny_lm  # another path loads meanwhile
    assert time.perf_counter() - t < 2
    assert slow.is_alive()  # still loading
    release.set()
    slow.join(10)
    # two spellings of one folder are one key: loaded once
    registry.get(f"{tmp_path}/./slow/")
    assert loads.count(str(tmp_path / "slow")) == 1


def test_registry_key_is_the_resolved_path(tmp_path):
    (tmp_path / "m").mkdir()
    os.symlink(tmp_path / "m", tmp_path / "link")
    reg = ModelRegistry()
    assert reg.key(f" {tmp_path}/m/ ") == reg.key(str(tmp_path / "link"))
    assert reg.key("") == reg.key("default") == "default"


def test_models_root_confines_the_model_field(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "private").mkdir()
    os.symlink(tmp_path / "private", tmp_path / "models" / "escape")
    reg = ModelRegistry(models_root=tmp_path / "models")
    assert reg.key(str(tmp_path / "models" / "m")).endswith("/models/m")
    assert reg.key("default") == "default"
    for outside in (tmp_path / "private", tmp_path / "models" / "escape", "/etc"):
        with pytest.raises(TacqError, match="Only model folders under"):
            reg.get(str(outside))


@pytest.mark.parametrize("path", ["x" * 5000, "/tmp/a\x00b"])
def test_overlong_or_malformed_paths_are_a_clear_error(path):
    with pytest.raises(TacqError, match="too long or malformed"):
        ModelRegistry().get(path)


def test_a_fifo_config_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "config.json")  # a read would block forever
    outcome: list = []

    def check():
        try:
            check_model_dir(tmp_path)
        except TacqError as e:
            outcome.append(str(e))

    t = threading.Thread(target=check, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive() and "not a regular file" in outcome[0]


def test_a_huge_or_non_object_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(" " * (2 << 20) + "{}")
    with pytest.raises(TacqError, match="regular file under 1 MB"):
        check_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(TacqError, match="not a JSON object"):
        check_model_dir(tmp_path)
