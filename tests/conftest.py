"""Shared fixtures: a seeded tiny random Llama on CPU, so unit tests take seconds."""

from __future__ import annotations

import os

import pytest

# Process settings for the whole run, set before any test module imports huggingface_hub
# (it reads them at import): offline, no telemetry, one converted-model folder shared by
# all tests (conversion takes ~30 s); caches stay per test (_isolated_home).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault(
    "TACQ_MODELS_DIR",
    os.path.join(os.environ.get("TACQ_HOME") or os.path.expanduser("~/.cache/tacq"), "models"),
)


# Set by pytest itself, or by torch the first time a code path imports inductor.
NOT_OURS = ("PYTEST_CURRENT_TEST", "TORCHINDUCTOR_", "_TORCHINDUCTOR_", "TRITON_")


@pytest.fixture(autouse=True)
def _environment_restored():
    """A test that sets an environment variable or tempfile's folder must restore it
    (monkeypatch does): its temp folder is removed when it passes, so a later test would
    write into a folder that is gone."""
    import tempfile

    before, tempdir = dict(os.environ), tempfile.tempdir
    yield
    assert tempfile.tempdir == tempdir, f"the test left tempfile.tempdir at {tempfile.tempdir}"
    after = dict(os.environ)
    changed = sorted(
        k
        for k in before.keys() | after.keys()
        if before.get(k) != after.get(k) and not k.startswith(NOT_OURS)
    )
    assert not changed, f"the test left environment variables changed: {changed}"


@pytest.fixture
def tiny_llama():
    """2 layers, hidden 64, GQA 4/2 heads, vocab 128, fp32, eval mode, frozen."""
    from tests.tiny import make_tiny_llama

    return make_tiny_llama()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test writes caches into its own temp folder."""
    monkeypatch.setenv("TACQ_HOME", str(tmp_path / "tacq_home"))


def _char_tokenizer():
    """A character-level tokenizer (99 ids) that fits the tiny model's vocab of 128."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for c in [chr(i) for i in range(32, 127)] + ["\n"]:
        vocab[c] = len(vocab)
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    raw.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="</s>",
    )


@pytest.fixture
def tiny_lm(tiny_llama):
    """The tiny Llama with a char tokenizer, wrapped as tacq loads real models."""
    from tacq.models import LoadedModel

    return LoadedModel(tiny_llama, _char_tokenizer(), "tiny", "memory", "tiny-0")


def make_tiny_task():
    """A 4-shot completion task the tiny model cannot do, enough to exercise the pipeline."""
    from tacq.data.tasks import Example, TaskSet

    words = ["hot", "big", "up", "wet", "fast", "old", "new", "tall", "low", "dark", "soft", "left"]
    ex = [
        Example(f"{w} -> {w[::-1]}\n{words[i - 1]} ->", f" {words[i - 1][::-1]}")
        for i, w in enumerate(words)
    ]
    return TaskSet("tiny", tuple(ex[:8]), tuple(ex[8:]), "completion", "tiny")


@pytest.fixture
def tiny_task():
    """make_tiny_task's task."""
    return make_tiny_task()
