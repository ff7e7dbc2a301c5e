"""A user's finished variants survive a restart; a damaged one is skipped, not fatal."""

from __future__ import annotations

import pytest
import torch

from app.state import UserState
from tacq.circuit.select import Selection
from tacq.quant.recipe import Recipe
from tacq.study.workflow import Study


def test_variants_survive_a_restart(tiny_lm, tiny_task, tmp_path):
    study = Study(tiny_lm, tiny_task)
    study.collect()
    user = UserState("a" * 32, tmp_path)
    v = study.quantize(Recipe.of(Selection("tacq", 3, 0.01)))
    user.add_variant(v, tiny_lm)
    gone = study.quantize(Recipe.of(Selection(bits=2, ratio=0.0)))
    user.add_variant(gone, tiny_lm)
    user.delete_variant(gone.name)

    again = UserState("a" * 32, tmp_path)  # a new process: nothing in memory
    assert again.restore_variants(tiny_lm) == [v.name]
    back = again.variants[v.name]
    ids = torch.tensor([[5, 17, 33, 60, 2, 90]])
    with torch.no_grad():
        assert torch.equal(back.model(ids).logits, v.model(ids).logits)
    assert back.size.n_kept == v.size.n_kept and back.size.total_bytes == v.size.total_bytes
    assert back.spec == v.spec  # the export writes the spec and reads it back unchanged

    other = UserState("b" * 32, tmp_path)
    assert other.restore_variants(tiny_lm) == []  # another user's variants stay theirs


def test_damaged_variant_is_skipped(tiny_lm, tiny_task, tmp_path):
    study = Study(tiny_lm, tiny_task)
    user = UserState("c" * 32, tmp_path)
    user.add_variant(study.quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn")), tiny_lm)
    weights = next((user.folder / "variants").glob("*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated by a crash or a full disk
    again = UserState("c" * 32, tmp_path)
    assert again.restore_variants(tiny_lm) == []


def test_names_cannot_leave_the_workspace(tmp_path):
    """A variant named like a path still saves inside the user's own folder."""
    user = UserState("d" * 32, tmp_path)
    for name in ("../../etc/passwd", "/abs/path", "a/../../b", "..", "~root"):
        target = user._variant_dir(name).resolve()
        assert target.is_relative_to((user.folder / "variants").resolve()), name
        assert target != (user.folder / "variants").resolve()


def _first_user_with_examples(tiny_task, tmp_path):
    from app.state import user_for

    user, who = user_for(None, tmp_path)  # a first page load: a new signed id
    user.task = tiny_task
    user.save_examples()
    return who


def test_a_signed_id_comes_back_to_its_own_user_only(tiny_task, tmp_path):
    from app.state import user_for

    who = _first_user_with_examples(tiny_task, tmp_path)
    assert who.issued and who.token.startswith(who.uid + ".")
    again, who2 = user_for(who.token, tmp_path)  # the same browser reloads
    assert again.user_id == who.uid and not who2.issued  # no id sent back this time
    assert again.load_examples().calib == tiny_task.calib


def test_forged_or_altered_ids_get_a_fresh_user(tiny_lm, tiny_task, tmp_path):
    from app.state import user_for

    who = _first_user_with_examples(tiny_task, tmp_path)
    first, _ = user_for(who.token, tmp_path)
    first.add_variant(
        Study(tiny_lm, tiny_task).quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn")),
        tiny_lm,
    )
    flipped = who.token[:-1] + ("0" if who.token[-1] != "0" else "1")
    forged = [
        who.uid,  # the bare uid, as old clients stored it (its folder is signed now)
        who.uid + "." + "0" * 64,  # an unsigned guess
        flipped,
        who.token + "\n",  # a trailing newline used to pass the `$` of the old regex
        who.token.upper(),
        "../" + who.uid,
        {"id": who.token},
        None,
    ]
    for value in forged:
        intruder, w = user_for(value, tmp_path)
        assert w.issued and intruder.user_id != who.uid, value
        assert intruder.load_examples() is None, value  # cannot read the first user's data
        assert intruder.restore_variants(tiny_lm) == [], value
        intruder.task = tiny_task.__class__("mine", tiny_task.calib[:2], (), "completion", "x")
        intruder.save_examples()  # ... nor overwrite it
    owner, _ = user_for(who.token, tmp_path)
    assert owner.load_examples().calib == tiny_task.calib
    assert owner.restore_variants(tiny_lm) == ["rtn-2bit"]


def test_an_unsigned_id_is_migrated_once(tiny_task, tmp_path):
    from app.state import UserState, user_for

    old = UserState("e" * 32, tmp_path)  # saved by an earlier version: a bare uid
    old.task = tiny_task
    old.save_examples()
    (old.folder / ".signed").unlink()  # as the earlier version left it: no mark
    moved, who = user_for("e" * 32, tmp_path)
    assert who.issued and moved.user_id != "e" * 32
    assert moved.load_examples().calib == tiny_task.calib  # kept, under the new signed id
    second, _ = user_for("e" * 32, tmp_path)  # anyone presenting the old id again
    assert second.load_examples() is None
    assert user_for(who.token, tmp_path)[0].load_examples().calib == tiny_task.calib
    assert oct((tmp_path / ".id_key").stat().st_mode & 0o777) == "0o600"


def test_variants_are_limited_by_memory_not_count(tiny_lm, tiny_task, tmp_path, monkeypatch):
    from tacq.errors import TacqError

    study = Study(tiny_lm, tiny_task)
    user = UserState("d" * 32, tmp_path)
    v = study.quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn"))
    user.add_variant(v, tiny_lm)
    monkeypatch.setenv("TACQ_VARIANT_BUDGET_MB", str(1.5 * v.resident_bytes / 2**20))
    with pytest.raises(TacqError, match="memory budget for variants"):
        user.check_room(tiny_lm, v.resident_bytes)
    user.check_room(tiny_lm, v.resident_bytes // 4)  # a smaller one still fits
    again = UserState("d" * 32, tmp_path)
    monkeypatch.setenv("TACQ_VARIANT_BUDGET_MB", str(0.5 * v.resident_bytes / 2**20))
    assert again.restore_variants(tiny_lm) == []  # over the budget: not loaded back


def test_two_sessions_of_one_user_share_one_budget(tiny_lm, tiny_task, tmp_path, monkeypatch):
    """Two tabs (or API sessions) of one browser id get one budget and one copy of each
    variant, not one per page load."""
    from app.state import user_for
    from tacq.errors import TacqError

    first, who = user_for(None, tmp_path)
    v = Study(tiny_lm, tiny_task).quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn"))
    first.add_variant(v, tiny_lm)
    monkeypatch.setenv("TACQ_VARIANT_BUDGET_MB", str(1.5 * v.resident_bytes / 2**20))
    second, _ = user_for(who.token, tmp_path)  # another tab of the same browser
    with pytest.raises(TacqError, match="memory budget for variants"):
        second.check_room(tiny_lm, v.resident_bytes)
    assert second.restore_variants(tiny_lm) == [v.name]  # held once, not loaded again
    assert second.variants[v.name] is first.variants[v.name]
    assert second.held_bytes() == v.resident_bytes
    other, _ = user_for(None, tmp_path)  # another browser: a budget of its own
    other.check_room(tiny_lm, v.resident_bytes)


def test_idle_sessions_release_memory_and_come_back(tiny_lm, tiny_task, tmp_path):
    """After the idle timeout a session's Study and variants are dropped from memory (not
    while a job runs); its saved variants come back at the next page load."""
    from app.common import handles_errors
    from app.state import sweep_idle, user_for

    user, who = user_for(None, tmp_path)
    user.set_task(tiny_lm, tiny_task)
    v = user.study.quantize(Recipe.of(Selection(bits=2, ratio=0.0), method="rtn"))
    user.add_variant(v, tiny_lm)

    @handles_errors
    def job(user: UserState):  # a running job: a handler that has not finished
        yield "started"
        yield "done"

    running = job(user)
    assert next(running) == "started"
    assert sweep_idle(0.0, tmp_path) == 0  # a user with a running job is never swept
    assert user.study is not None and v.name in user.variants
    assert list(running) == ["done"]

    assert sweep_idle(3600.0, tmp_path) == 0  # not idle long enough
    assert sweep_idle(0.0, tmp_path) == 1
    assert user.study is None and user.variants == {} and user.task is None
    with pytest.raises(Exception, match="idle") as e:  # the old page gets a message
        next(job(user))
    assert type(e.value).__name__ == "Error"  # gr.Error: shown in the page, not "Internal"

    back, _ = user_for(who.token, tmp_path)  # the user returns: a page load
    assert back is not user
    assert back.restore_variants(tiny_lm) == [v.name]
    assert back.load_examples() == tiny_task
