"""Model loads: one slow load never blocks another user; bad paths are refused up front."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

import app.state as state
from app.state import ModelRegistry
from tacq.errors import TacqError
from tacq.model_files import SUPPORTED_TYPES, check_model_dir, fingerprint
from tacq.models import load_model


def test_a_hung_load_does_not_delay_other_users(monkeypatch, tiny_lm, tmp_path):
    release, started, loads = threading.Event(), threading.Event(), []

    def fake_load(source, progress=None):
        loads.append(source)
        if source.endswith("slow"):
            started.set()
            release.wait(30)  # a stalled mount or a huge model
            loads.append("slow done")
        return tiny_lm

    monkeypatch.setattr(state, "load_model", fake_load)
    registry = ModelRegistry()
    registry.preload_default("default")
    (tmp_path / "slow").mkdir()
    (tmp_path / "other").mkdir()
    slow = threading.Thread(target=registry.get, args=(str(tmp_path / "slow"),))
    slow.start()
    assert started.wait(10)
    assert registry.get("default") is tiny_lm  # another user's page load
    assert registry.get(str(tmp_path / "other")) is tiny_lm  # another path loads meanwhile
    assert "slow done" not in loads  # both answered while it still loads (not after 30 s)
    assert slow.is_alive()
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


def _tiny_folder(tmp_path, lm, name: str = "tiny") -> Path:
    folder = tmp_path / name
    lm.model.save_pretrained(str(folder), safe_serialization=True)
    lm.tokenizer.save_pretrained(str(folder))
    return folder


def _edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, **changes}))


def _in_thread(fn, *args, wait: float = 10) -> list:
    """Run fn in a daemon thread; -> [the TacqError's message] or [the result]; [] if it
    is still running after `wait` seconds (a FIFO read blocks forever)."""
    outcome: list = []

    def run():
        try:
            outcome.append(fn(*args))
        except TacqError as e:
            outcome.append(str(e))
        except Exception as e:  # noqa: BLE001 - shown by the failing assert
            outcome.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(wait)
    return outcome


def _release(fifo: Path) -> None:
    """Unblock a reader stuck on `fifo` (an old regression's thread) so it can end."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader: nothing is stuck


def test_a_model_folder_inside_the_workspace_is_refused(tmp_path):
    """Uploads with the same bytes land in one hash-named folder of the workspace: two
    uploads (config.json, model.safetensors) would make a model folder there."""
    workspace = tmp_path / "workspace"
    built = workspace / "tmp" / "gradio" / ("ab" * 32)
    built.mkdir(parents=True)
    (built / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 3000}')
    (built / "model.safetensors").write_text('{"model_type": "llama", "num_hidden_layers": 3000}')
    os.symlink(built, tmp_path / "looks-outside")
    os.symlink(workspace, tmp_path / "ws-link")
    reg = ModelRegistry(workspace=tmp_path / "ws-link")  # a linked workspace is resolved too
    for path in (built, tmp_path / "looks-outside", f"{workspace}/tmp/../tmp/gradio/{'ab' * 32}"):
        with pytest.raises(TacqError, match="inside the app's workspace"):
            reg.get(str(path))
    assert reg._loading == {}


def test_a_fifo_shard_is_refused_without_opening_it(tmp_path, tiny_lm):
    """A sharded folder whose shard is a FIFO froze the whole server: the safetensors reader
    blocks in open() holding the GIL. The folder check refuses it before any open."""
    folder = _tiny_folder(tmp_path, tiny_lm)
    (folder / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "shard.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    os.mkfifo(folder / "shard.safetensors")
    try:
        outcome = _in_thread(check_model_dir, folder)
        assert outcome and "shard.safetensors is not a regular file" in str(outcome[0])
        outcome = _in_thread(load_model, str(folder))
        assert outcome and "shard.safetensors is not a regular file" in str(outcome[0])
    finally:
        _release(folder / "shard.safetensors")


def test_a_fifo_beside_real_weights_does_not_block_the_fingerprint(tmp_path, tiny_lm):
    folder = _tiny_folder(tmp_path, tiny_lm)
    os.mkfifo(folder / "extra.safetensors")
    try:
        outcome = _in_thread(fingerprint, folder)
        assert outcome and "not a regular file" in str(outcome[0])
        outcome = _in_thread(load_model, str(folder))  # refused before transformers opens it
        assert outcome and "extra.safetensors is not a regular file" in str(outcome[0])
    finally:
        _release(folder / "extra.safetensors")


def test_a_config_larger_than_its_weights_is_refused(tmp_path, tiny_lm):
    """3000 layers declared beside a 2-layer file: refused from the headers, before a
    model is built (one with 1000000 layers would have allocated ~37 GB)."""
    folder = _tiny_folder(tmp_path, tiny_lm)
    _edit_config(folder, num_hidden_layers=3000)
    with pytest.raises(TacqError, match="declares 3000 decoder layers.*weights hold 2"):
        load_model(str(folder))
    _edit_config(folder, num_hidden_layers=1_000_000)
    with pytest.raises(TacqError, match="declares 1000000 decoder layers.*weights hold 2"):
        load_model(str(folder))
    _edit_config(folder, num_hidden_layers=2, intermediate_size=4096)
    with pytest.raises(TacqError, match=r"gate_proj.weight has shape \(96, 64\).*\(4096, 64\)"):
        load_model(str(folder))


@pytest.mark.parametrize("bad", ["64", [[64]], -64, 0, True, 1e9])
def test_nonsense_sizes_in_the_config_are_a_clear_error(tmp_path, tiny_lm, bad):
    folder = _tiny_folder(tmp_path, tiny_lm)
    _edit_config(folder, intermediate_size=bad)
    with pytest.raises(TacqError, match="intermediate_size"):
        load_model(str(folder))


def test_the_same_json_as_config_and_weights_is_refused(tmp_path):
    """The upload-built folder of the report, reached from outside a workspace: the
    'weights' are JSON, so their header length is nonsense."""
    sizes = dict(hidden_size=64, intermediate_size=64, vocab_size=128, num_attention_heads=4)
    body = json.dumps({"model_type": "llama", "num_hidden_layers": 3000, **sizes})
    (tmp_path / "config.json").write_text(body)
    (tmp_path / "model.safetensors").write_text(body)
    with pytest.raises(TacqError, match="model.safetensors is not a safetensors file"):
        load_model(str(tmp_path))


def test_a_corrupt_safetensors_header_is_a_clear_error(tmp_path, tiny_lm):
    folder = _tiny_folder(tmp_path, tiny_lm)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8:20] = b"{not json!!!"
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(TacqError, match="model.safetensors is not a safetensors file"):
        load_model(str(folder))


def test_a_header_whose_sizes_exceed_the_file_is_refused(tmp_path, tiny_lm):
    folder = _tiny_folder(tmp_path, tiny_lm)
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["model.norm.weight"]["data_offsets"][1] += 10**9
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])
    with pytest.raises(TacqError, match="model.norm.weight.*does not fit"):
        load_model(str(folder))


def test_a_pickle_shard_in_the_index_is_refused(tmp_path, tiny_lm):
    """use_safetensors=True does not stop transformers from torch.load-ing a .bin shard an
    index names."""
    import torch

    folder = _tiny_folder(tmp_path, tiny_lm)
    (folder / "model.safetensors").rename(folder / "unused.safetensors")
    torch.save(tiny_lm.model.state_dict(), folder / "pytorch_model.bin")
    weight_map = {k: "pytorch_model.bin" for k in tiny_lm.model.state_dict()}
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    with pytest.raises(TacqError, match="pytorch_model.bin.*safetensors only"):
        load_model(str(folder))


def test_a_deeply_nested_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000)
    with pytest.raises(TacqError, match="too deeply nested"):
        check_model_dir(tmp_path)


def test_failed_loads_leave_no_path_lock_behind(tmp_path):
    reg = ModelRegistry()
    for i in range(5):
        (tmp_path / f"m{i}").mkdir()
        (tmp_path / f"m{i}" / "config.json").write_text('{"model_type": "bert"}')
        with pytest.raises(TacqError):
            reg.get(str(tmp_path / f"m{i}"))
    assert reg._loading == {}


@pytest.mark.parametrize("kind", ["llama", "llama-tied", "qwen2-bias", "phi3"])
def test_the_tiny_models_pass_the_shape_check(tmp_path, kind):
    """Tied embeddings (no lm_head tensor), q/k/v biases and fused projections all load."""
    from tests.conftest import _char_tokenizer
    from tests.tiny import TINY_SIZES, make_tiny_phi3

    if kind == "phi3":
        model = make_tiny_phi3()
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        mtype = kind.split("-")[0]
        cfg = AutoConfig.for_model(
            mtype, **{**TINY_SIZES, "tie_word_embeddings": kind.endswith("tied")}
        )
        model = AutoModelForCausalLM.from_config(cfg)
    lm = SimpleNamespace(model=model, tokenizer=_char_tokenizer())
    folder = _tiny_folder(tmp_path, lm, kind)
    loaded = load_model(str(folder), "cpu")
    assert loaded.model.config.num_hidden_layers == 2
    names = set(loaded.model.state_dict())
    assert ("model.layers.0.self_attn.q_proj.bias" in names) == (kind == "qwen2-bias")


@pytest.mark.parametrize("mtype", SUPPORTED_TYPES)
def test_expected_shapes_match_what_transformers_builds(mtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    from tacq.model_files import expected_shapes
    from tests.tiny import TINY_SIZES

    cfg = AutoConfig.for_model(mtype, **TINY_SIZES, pad_token_id=2)
    built = {
        k.removeprefix("model."): tuple(v.shape)
        for k, v in AutoModelForCausalLM.from_config(cfg).state_dict().items()
    }
    want = expected_shapes(cfg)
    assert {k: built.get(k) for k in want} == want
