"""One cancel token per job: a Cancel stops only its own job; device moves are undone."""

from __future__ import annotations

import pytest
import torch

from app.state import Jobs
from tacq.errors import Cancelled


def _hook(stop):
    from app.common import gradio_progress

    drawn: list[float] = []
    return gradio_progress(lambda frac, desc: drawn.append(frac), stop), drawn


def test_cancel_stops_only_the_job_it_belongs_to():
    jobs = Jobs()
    gptq, drawn = _hook(jobs.start("quantize"))
    chat = jobs.start("chat")
    assert jobs.cancel("chat") and chat.is_set()
    gptq(0.5, "gptq block 3/30")  # the chat's Stop does not reach the quantization
    assert drawn == [0.5]
    assert jobs.cancel("quantize")
    with pytest.raises(Cancelled, match="Nothing was saved"):
        gptq(0.6, "gptq block 4/30")
    assert not jobs.cancel("demo")  # nothing of that kind ever ran


def test_a_new_job_neither_clears_nor_inherits_a_cancel():
    jobs = Jobs()
    first = jobs.start("quantize")
    jobs.cancel("quantize")
    jobs.start("chat")  # sending a chat message used to clear the pending Cancel
    assert first.is_set()
    second, _ = _hook(jobs.start("quantize"))  # the next quantization starts clean
    second(0.1, "calibration")


def test_app_handlers_share_no_stop_flag():
    """Every tab takes its token from UserState.jobs; none reads a session-wide flag."""
    from pathlib import Path

    from app.state import UserState

    assert "stop" not in UserState.__dataclass_fields__
    app_dir = Path(__file__).resolve().parent.parent / "app"
    for f in app_dir.glob("*.py"):
        assert "user.stop" not in f.read_text(), f.name


def test_streamed_gptq_moves_every_module_home_when_cancelled(tiny_llama, monkeypatch):
    """exec_device: on cancel or error every module moved to the device goes back."""
    from tacq.data.batches import Encoded, make_batches
    from tacq.formats.grid import GPTQConfig
    from tacq.quant.quantize import quantize_model

    last_move: dict[int, object] = {}
    real_to = torch.nn.Module.to

    def recording_to(self, *args, **kwargs):
        last_move[id(self)] = args[0] if args else kwargs.get("device")
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", recording_to)
    calls = []

    def stop_in_second_block(frac: float, label: str) -> None:
        calls.append(label)
        if "block 2/" in label:
            raise Cancelled("stopped")

    enc = [Encoded(tuple(range(3, 3 + n)), 2) for n in (9, 12, 7)]
    batches = make_batches(enc, batch_size=2, pad_id=0)
    with pytest.raises(Cancelled):
        quantize_model(
            tiny_llama,
            batches,
            GPTQConfig(bits=2),
            progress=stop_in_second_block,
            exec_device="cpu",  # a str; every way home is the module's torch.device
        )
    assert last_move, "nothing was moved: the test would pass vacuously"
    stranded = [k for k, dev in last_move.items() if not isinstance(dev, torch.device)]
    assert stranded == []  # the last move of every module took it home
