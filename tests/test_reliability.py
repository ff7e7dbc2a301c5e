"""Bad input never escapes as anything but TacqError; nothing reaches the network."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tacq.circuit.select import Selection
from tacq.data.reading import MAX_UPLOAD_BYTES, decode_upload, guess_format, parse_examples
from tacq.errors import TacqError
from tacq.quant.recipe import Recipe

FRAGMENTS = [
    '{"prompt": ',
    '"answer": ',
    "}",
    "[",
    "]",
    '"',
    ",",
    "\n",
    "\t",
    ";",
    "\\u0000",
    "\\ud800",
    "prompt,answer\n",
    '""',
    "\r\n",
    "\x00",
    "null",
    "1e999",
    "{}",
    "[]",
]


def _random_text(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # structured-looking noise
        return "".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 60)))
    if kind == 1:  # random unicode, astral planes and controls included
        return "".join(chr(rng.randrange(1, 0x2FFFF)) for _ in range(rng.randrange(0, 300)))
    rows = [{"prompt": "x" * rng.randrange(0, 5), "answer": rng.choice([1, None, [], "y"])}]
    return "\n".join(json.dumps(r) for r in rows * rng.randrange(1, 5))


def _parse_upload(data: bytes, name: str) -> None:
    text = decode_upload(data)
    parse_examples(text, guess_format(name, text))


def test_fuzz_upload_parser_raises_only_tacq_errors():
    rng = random.Random(1234)
    cases = 0
    for i in range(300):
        if i % 2:
            data = rng.randbytes(rng.randrange(0, 2000))
        else:
            data = _random_text(rng).encode("utf-8", errors="surrogatepass")
        for name in ("x.jsonl", "x.csv", "x.txt", "x"):
            try:
                _parse_upload(data, name)
            except TacqError:
                pass  # a clear message is the expected outcome for junk
            cases += 1
    assert cases == 1200


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe\x00\x00", b'"' * 100_000],
    ids=["deep-array", "deep-object", "utf32-bom", "quotes"],
)
def test_pathological_inputs_get_a_message(data):
    with pytest.raises(TacqError):
        text = decode_upload(data)
        result = parse_examples(text, guess_format("x", text))
        result.strict()


def test_oversize_upload_refused_before_parsing():
    with pytest.raises(TacqError, match="limit is 20 MB"):
        decode_upload(b"a" * (MAX_UPLOAD_BYTES + 1))


@pytest.mark.slow
def test_cli_gradients_never_touch_the_network(tmp_path):
    from tests.network_audit import attempts, audit_env

    env = audit_env(tmp_path / "audit")
    env["TACQ_HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tacq",
            "gradients",
            "--task",
            "plurals",
            "--examples",
            "4",
            "--max-length",
            "64",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "gradients: 4 samples" in out.stdout
    assert attempts(tmp_path / "audit") == []


# ---------------------------------------------------------------- faults


def _stop_after(n_calls: int):
    """A progress hook that cancels the step on its n-th report, as the Cancel button does."""
    from tacq.errors import Cancelled

    calls = {"n": 0}

    def hook(frac: float, label: str) -> None:
        calls["n"] += 1
        if calls["n"] >= n_calls:
            raise Cancelled("stopped")

    return hook


def test_cancel_during_gradients_saves_nothing(tiny_lm, tiny_task):
    from tacq.circuit.gradients import grads_cache_path, grads_key
    from tacq.errors import Cancelled
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    with pytest.raises(Cancelled):
        study.collect(_stop_after(2))
    assert study.stats is None
    key = grads_key(tiny_lm.fingerprint, study.digest(), study.data_cfg, study.grad_cfg)
    assert not grads_cache_path(key).exists()
    assert not study.collect().from_cache  # the next run computes it whole


def test_cancel_during_gptq_leaves_the_model_untouched(tiny_lm, tiny_task):
    import torch

    from tacq.errors import Cancelled
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    study.collect()
    before = {k: v.clone() for k, v in tiny_lm.model.state_dict().items()}
    with pytest.raises(Cancelled):
        study.quantize(Recipe.of(Selection("tacq", 2, 0.01)), _stop_after(6))
    after = tiny_lm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    v = study.quantize(Recipe.of(Selection("tacq", 2, 0.01)))  # and the study still works
    assert v.size.n_kept > 0


def test_memory_budget_gives_a_message(tiny_lm, tiny_task, monkeypatch):
    from tacq.study.workflow import Study

    monkeypatch.setenv("TACQ_MEMORY_BUDGET_MB", "0.01")
    with pytest.raises(TacqError, match="Not enough memory"):
        Study(tiny_lm, tiny_task).quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn"))


@pytest.mark.parametrize(
    "config, files, message",
    [
        ({"model_type": "bert"}, ["model.safetensors"], "Unsupported model type 'bert'"),
        ({"model_type": "llama"}, [], "no \\*.safetensors"),
        ({"model_type": "llama"}, ["pytorch_model.bin"], "pickle weights"),
        ({"model_type": "llama"}, ["weights.pt", "x.ckpt"], "pickle weights"),
        ({"model_type": "llama", "auto_map": {"AutoModel": "x.Y"}}, [], "remote code"),
        (
            {"model_type": "llama", "transformers_weights": "adapter_model.bin"},
            ["model.safetensors", "adapter_model.bin"],
            "names its own weight file",
        ),
    ],
    ids=["bert", "no-weights", "pickle-only", "pt-only", "remote-code", "transformers-weights"],
)
def test_model_folder_refusals(tmp_path, config, files, message):
    from tacq.model_files import check_model_dir

    (tmp_path / "config.json").write_text(json.dumps(config))
    for f in files:
        (tmp_path / f).write_bytes(b"\0" * 16)
    with pytest.raises(TacqError, match=message):
        check_model_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.json", *files])


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_processes_starting_together_convert_the_bundled_model_once(tmp_path, monkeypatch):
    """torchrun's ranks on a fresh machine: each used to convert the GGUF and replace the
    folder the other was reading ("has no config.json"). Now one converts, the rest wait."""
    import threading
    import time

    from tacq import models

    calls = []

    def slow_convert(gguf, out, progress):
        calls.append(out)
        time.sleep(0.5)  # the window in which a second process used to start its own
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"\0" * 16)

    monkeypatch.setenv("TACQ_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(models, "_convert_gguf", slow_convert)
    monkeypatch.setattr(models, "bundled_gguf", lambda: tmp_path / "model.gguf")
    found, errors = [], []

    def start():
        try:
            found.append(models.default_model_dir())
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(calls) == 1
    assert found == [tmp_path / "models" / models.DEFAULT_MODEL] * 3
    assert (found[0] / "config.json").read_text() == "{}"


def test_cli_lists_every_command():
    """Every command the README names is wired into the parser."""
    from tacq.cli.main import COMMANDS, build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) == set(choices)


def test_cli_rounding_check_without_steps_is_refused_before_loading(tmp_path, capsys):
    from tacq.cli.main import main

    assert main(["quantize", "--rounding-check", "--out", str(tmp_path / "v")]) == 1
    assert "--rounding-check needs --rounding-steps" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_cli_bad_distill_epochs_are_refused_before_loading(tmp_path, capsys):
    from tacq.cli.main import main

    assert main(["quantize", "--distill-epochs", "-2", "--out", str(tmp_path / "v")]) == 1
    assert "at least 1 epoch (got -2)" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_cli_settings_name_a_recipe_that_the_options_then_change():
    """--settings measured is the Recipe preset at --bits; an option given beside it changes
    that field and nothing else (no option is silently lost, none refused)."""
    from tacq.cli.parser import build_parser
    from tacq.cli.recipe_flags import recipe_from_args
    from tacq.quant.recipe import Recipe

    def recipe(*argv):
        return recipe_from_args(build_parser().parse_args(["quantize", *argv, "--out", "v"]))

    for bits in (2, 3, 4):
        assert recipe("--settings", "measured", "--bits", str(bits)) == Recipe.preset(
            "measured", bits
        )
        assert recipe("--bits", str(bits)) == Recipe.preset("measured", bits)  # the default
        assert recipe("--settings", "paper", "--bits", str(bits)) == Recipe(bits=bits)
    # RTN beside a preset: its GPTQ-only levers dropped, its kept ratio and the options kept
    rtn = recipe("--method", "rtn", "--bits", "2")
    assert rtn == Recipe(bits=2, ratio=0.002, method="rtn")
    assert recipe("--method", "rtn", "--group-size", "64").group_size == 64
    got = recipe("--settings", "measured", "--damp", "0.3", "--metric", "msg", "--act-order")
    assert got == Recipe.preset("measured", 2).changed(damp=0.3, metric="msg", act_order=True)
    assert got.ratio == 0.002 and got.rotation == "hadamard"  # the rest of the preset kept
    assert recipe("--rotate", "haar").rotation == "haar"  # the flag's name before the Recipe


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "rtn"], "for GPTQ"),
    ],
)
def test_cli_rotation_with_what_it_cannot_combine_is_refused_before_loading(
    tmp_path, capsys, extra, message
):
    from tacq.cli.main import main

    out = tmp_path / "v"
    assert main(["quantize", "--rotate", "hadamard", *extra, "--out", str(out)]) == 1
    said = capsys.readouterr()
    assert message in said.err and "loaded" not in said.out  # no model was loaded
    assert not out.exists()


def test_chat_longer_than_the_context_gets_a_message(tiny_lm):
    from app.chat_stream import stream_chat

    long = [{"role": "user", "content": "word " * 500}]  # 2,500 characters = tokens here
    with pytest.raises(TacqError, match="exceeds the 2048-token context"):
        next(stream_chat(tiny_lm.model, tiny_lm.tokenizer, long, max_new_tokens=16))


@pytest.mark.parametrize("bad", [-0.01, 0.51, float("nan")])
def test_ratio_outside_range_is_refused(bad):
    from tacq.circuit.select import check_ratio

    with pytest.raises(TacqError, match="between 0 and 0.5"):
        check_ratio(bad)
