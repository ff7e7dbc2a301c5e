"""A peer's variant is made in a child process by the peer's package (here a fake hqq)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tacq.errors import Cancelled, TacqError
from tacq.formats import export
from tacq.models import load_model, quantizable_linears
from tacq.peers.registry import check_peer, package_version
from tacq.peers.run import make_peer_variant

FAKE = Path(__file__).parent / "fixtures" / "fake_peers"


@pytest.fixture
def fake_hqq(monkeypatch):
    """The fake hqq importable here and in child processes."""
    monkeypatch.syspath_prepend(str(FAKE))
    monkeypatch.setenv("PYTHONPATH", str(FAKE))


@pytest.fixture
def tiny_folder(tiny_lm, tmp_path):
    """The tiny model saved as a folder (a peer's child process loads it from there)."""
    folder = tmp_path / "tiny"
    tiny_lm.model.save_pretrained(folder, safe_serialization=True)
    tiny_lm.tokenizer.save_pretrained(folder)
    return load_model(str(folder), "cpu")


def test_installed_peers_and_refusals(fake_hqq, monkeypatch):
    from tacq.peers import registry

    assert package_version("hqq") == "hqq 0.0.0+fake"
    package, _, run = registry.PEERS["autoround"]  # absent, whatever this machine has installed
    monkeypatch.setitem(registry.PEERS, "autoround", (package, "tacq_no_such_module", run))
    with pytest.raises(TacqError, match="requirements-peers.txt"):
        check_peer("autoround", 2, 128)
    with pytest.raises(TacqError, match="group sizes 64, 32"):
        check_peer("hqq", 2, 100)
    with pytest.raises(TacqError, match="Unknown peer"):
        check_peer("gguf", 2, 64)


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_peer_variant_holds_the_peers_weights(fake_hqq, tiny_folder, tmp_path):
    lm = tiny_folder
    before = {n: m.weight.detach().clone() for n, m in quantizable_linears(lm.model).items()}
    seen = []
    v = make_peer_variant(lm, "hqq", 2, 64, [], progress=lambda f, s: seen.append(s))
    assert v.name == "hqq-2bit-g64" and v.spec.method == "hqq" and v.spec.ratio == 0
    assert v.peer["package"] == "hqq 0.0.0+fake"
    assert any("quantizing" in s for s in seen)
    for name, m in quantizable_linears(v.model).items():
        W = before[name]
        groups = W.reshape(-1, 64)  # the fake's RTN, recomputed here
        lo, hi = groups.min(1, keepdim=True).values, groups.max(1, keepdim=True).values
        scale = ((hi - lo) / 3).clamp(min=1e-8)
        want = (torch.clamp(torch.round((groups - lo) / scale), 0, 3) * scale + lo).view_as(W)
        assert torch.allclose(m.weight, want, atol=1e-6), name
        assert torch.equal(quantizable_linears(lm.model)[name].weight, W)  # original untouched
    # honest size from the peer's own storage: 2-bit codes + fp16 scale and zero per 64
    n = sum(w.numel() for w in before.values())
    groups = sum(w.shape[0] * -(-w.shape[1] // 64) for w in before.values())
    assert v.size.bpw_honest == pytest.approx((2 * n + 8 * 4 * groups) / n)
    with pytest.raises(TacqError, match="export it as dequantized"):
        export.save_packed(tmp_path / "p", lm, v)
    out = export.save_dequantized(tmp_path / "d", lm, v)
    assert "hqq 0.0.0+fake" in (out / "README.md").read_text()


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_a_failing_peer_says_why(fake_hqq, tiny_folder):
    with pytest.raises(TacqError, match="hqq failed: .*fake hqq fails at 4 bits"):
        make_peer_variant(tiny_folder, "hqq", 4, 64, [])


@pytest.mark.slow  # over half a second: out of the fast suite, still in CI
def test_cancel_ends_the_child(fake_hqq, tiny_folder, monkeypatch):
    """Cancel kills the peer's process at once: it has exited, by SIGKILL, not by finishing."""
    import signal
    import subprocess

    from tacq.peers import run as peer_run

    children = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            children.append(self)

    def stop(frac, label):
        raise Cancelled("stop")

    monkeypatch.setattr(peer_run.subprocess, "Popen", Recorded)
    with pytest.raises(Cancelled):
        make_peer_variant(tiny_folder, "hqq", 2, 64, [], progress=stop)
    assert len(children) == 1 and children[0].returncode == -signal.SIGKILL


def test_honest_bpw_counts_the_peers_qparams_and_the_weights_kept_on_top(tiny_lm):
    from tacq.formats.sizes import NumberFormat, linear_bytes
    from tacq.peers.registry import honest_bpw

    lm = tiny_lm
    names = list(quantizable_linears(lm.model))
    shapes = {n: lm.model.get_submodule(n).weight.shape for n in names}
    fmt = {"scale_bytes": 2, "zero_bytes": 2}
    kept = {names[0]: 7, names[-1]: 3}
    number = NumberFormat(2, 16, 2, 2)
    by_hand = sum(sum(linear_bytes(*shapes[n], kept.get(n, 0), number)) for n in names)
    n_weights = sum(s.numel() for s in shapes.values())
    assert honest_bpw(lm.model, names, 2, 16, fmt, kept) == 8 * by_hand / n_weights
    plain = honest_bpw(lm.model, names, 2, 16, fmt)
    assert honest_bpw(lm.model, names, 2, 16, fmt, kept) > plain
