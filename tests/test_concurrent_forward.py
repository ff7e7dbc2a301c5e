"""Forwards of one model on several threads while something compiles: the app chats while it
evaluates, and warms a new variant's compiled kernel up in the background meanwhile.

torch.compiler.is_compiling() is one process-wide flag; kernels 0.19 and transformers 5 kept
per-forward state in a global while it was set, so a forward beside a compile crashed
("'_contextvars.Token' object has no attribute 'get'"). tacq.formats.packed makes that state per
thread again (per_thread_forward_state); these tests fail on an exception in any thread.
"""

from __future__ import annotations

import threading

import pytest
import torch

import tacq.formats.packed as packed
from tacq.quant.recipe import Recipe


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions raised in any thread, including threads the code under test starts
    (stream_chat generates in its own)."""
    errors: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


def _run(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - collected, asserted in the test's thread
        errors.append(e)


def test_a_forward_beside_a_compile_keeps_its_own_state(tiny_llama, thread_errors):
    """The interleaving that crashed, made certain with events: forward A enters attention,
    another thread starts compiling, forward B enters attention, the compile ends, A then B
    finish. Both give the single-threaded logits."""
    packed.per_thread_forward_state()  # what tacq.formats.packed does before its own torch.compile
    model, ids = tiny_llama, torch.tensor([[5, 9, 17, 33, 2, 8]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
    inside = {"A": threading.Event(), "B": threading.Event()}
    go = {"A": threading.Event(), "B": threading.Event()}
    compiling, compiled = threading.Event(), threading.Event()

    def pause(module, args):  # inside the attention forward, before q_proj
        name = threading.current_thread().name
        if name in go:
            inside[name].set()
            assert go[name].wait(30)

    def slow_backend(gm, example_inputs):  # the compile session lasts until released
        compiling.set()
        assert compiled.wait(30)
        return gm.forward

    out = {}

    def forward(name: str) -> None:
        with torch.no_grad():
            out[name] = model(input_ids=ids).logits

    hook = model.model.layers[0].self_attn.q_proj.register_forward_pre_hook(pause)
    errors = thread_errors
    try:
        a = threading.Thread(target=_run, args=(errors, forward, "A"), name="A")
        a.start()
        assert inside["A"].wait(30)
        fn = torch.compile(lambda x: x * 2, backend=slow_backend)
        c = threading.Thread(target=_run, args=(errors, fn, torch.ones(3)), name="compile")
        c.start()
        assert compiling.wait(30)
        b = threading.Thread(target=_run, args=(errors, forward, "B"), name="B")
        b.start()
        assert inside["B"].wait(30)
        compiled.set()
        c.join(30)
        go["A"].set()
        a.join(30)
        go["B"].set()
        b.join(30)
    finally:
        hook.remove()
        for e in (*go.values(), compiled):
            e.set()
    assert not errors, errors
    assert torch.equal(out["A"], want) and torch.equal(out["B"], want)


WARM_UPS = 8  # before the fix the crash came after 4 to 5 warm-ups on average (1 to 18)


@pytest.mark.slow  # about a minute: each warm-up compiles the kernel of 4 layer shapes again
def test_chat_and_evaluation_beside_warm_ups(tiny_lm, tiny_task, thread_errors, monkeypatch):
    """The app's threads on one packed variant: warm-up (compiling), evaluation and chat at
    once, for many warm-ups. No thread raises, and evaluation and chat give what they give
    alone."""
    from app.chat_stream import stream_chat
    from tacq.circuit.select import Selection
    from tacq.eval.evaluate import evaluate
    from tacq.study.workflow import Study

    study = Study(tiny_lm, tiny_task)
    study.collect()
    model = study.quantize(Recipe.of(Selection("tacq", 2, 0.02))).model
    tok, held = tiny_lm.tokenizer, list(tiny_task.heldout)
    chat = [{"role": "user", "content": tiny_task.heldout[0].prompt}]
    monkeypatch.setitem(packed._DECODE, "compiled", True)
    monkeypatch.setitem(packed._DECODE, "fn", None)

    def scores():
        return [r["nll"] for r in evaluate(model, tok, held, "completion", "v")[0].rows]

    def reply():
        return list(stream_chat(model, tok, chat, max_new_tokens=8))[-1]

    want_scores, want_reply = scores(), reply()
    done, errors = threading.Event(), thread_errors
    got = {"scores": [], "replies": []}

    def warm_ups():
        try:
            for _ in range(WARM_UPS):
                with packed.KERNEL_LOCK:  # reset frees the graphs another thread may be in
                    torch._dynamo.reset()  # compile again, as a new variant's warm-up does
                    packed._DECODE["fn"] = None
                packed.warm_up(model)
        finally:
            done.set()

    def repeat(fn, into):
        while not done.is_set() and not errors:
            into.append(fn())

    threads = [
        threading.Thread(target=_run, args=(errors, warm_ups)),
        threading.Thread(target=_run, args=(errors, repeat, scores, got["scores"])),
        threading.Thread(target=_run, args=(errors, repeat, reply, got["replies"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    with packed.KERNEL_LOCK:
        torch._dynamo.reset()
    assert not errors, errors
    assert got["scores"] and got["replies"]
    for s in got["scores"]:
        assert s == pytest.approx(want_scores, rel=1e-5)
    assert set(got["replies"]) == {want_reply}


def _packed_layer():
    from tacq.formats.grid import LayerQuant

    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 4, (6, 40), generator=g, dtype=torch.uint8)
    mask = torch.zeros(6, 40, dtype=torch.bool)
    lq = LayerQuant(codes, torch.ones(6), torch.ones(6), mask, torch.zeros(0).half(), 2, None, None)
    return packed.PackedLinear.from_layer(lq)


def test_one_thread_at_a_time_in_the_compiled_kernel(monkeypatch, thread_errors):
    """dynamo is not thread-safe (a compile in one thread rewrote the cache another was
    reading: a segfault in CI): one-token forwards of several threads take turns."""
    inside, most = [0], [0]
    count = threading.Lock()

    def kernel(x, x_kept, *args):
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.02)
        with count:
            inside[0] -= 1
        return torch.zeros(1, 6)

    monkeypatch.setitem(packed._DECODE, "compiled", True)
    monkeypatch.setitem(packed._DECODE, "fn", kernel)
    mod = _packed_layer()
    threads = [threading.Thread(target=lambda: [mod(torch.randn(1, 40)) for _ in range(5)])]
    threads += [threading.Thread(target=lambda: [mod(torch.randn(1, 40)) for _ in range(5)])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not thread_errors, thread_errors
    assert most[0] == 1


def test_every_decoding_thread_gets_the_raised_recompile_limit(monkeypatch):
    """dynamo's config is per thread since torch 2.12: the limit set in the first
    compiling thread alone left a chat thread at 8 graphs, then eager."""
    seen = []

    def kernel(x, x_kept, *args):
        seen.append(torch._dynamo.config.recompile_limit)
        return torch.zeros(1, 6)

    monkeypatch.setitem(packed._DECODE, "compiled", True)
    monkeypatch.setitem(packed._DECODE, "fn", kernel)
    mod = _packed_layer()
    for _ in range(2):  # each in a fresh thread, whose config starts at the default
        t = threading.Thread(target=mod, args=(torch.randn(1, 40),))
        t.start()
        t.join(30)
    assert seen == [packed.RECOMPILE_LIMIT] * 2
