"""The workspace is private (0700 / 0600), holds the temp files, and sheds old ones."""

from __future__ import annotations

import os
import stat
import tempfile
import time

from app.workspace import MAX_AGE_S, prepare, sweep, tighten


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_old_world_readable_folders_are_tightened(tmp_path):
    user = tmp_path / "users" / ("a" * 32)
    user.mkdir(parents=True)
    (user / "examples.json").write_text("{}")
    os.chmod(tmp_path / "users", 0o755)
    os.chmod(user, 0o755)
    os.chmod(user / "examples.json", 0o644)
    tighten(tmp_path)
    assert _mode(tmp_path) == _mode(tmp_path / "users") == _mode(user) == 0o700
    assert _mode(user / "examples.json") == 0o600


def test_prepare_routes_temp_files_into_the_private_workspace(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", tempfile.tempdir)
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")  # recorded, so prepare()'s value is undone
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    old_umask = os.umask(0o022)
    try:
        tmp = prepare(tmp_path / "ws")
        assert os.environ["GRADIO_TEMP_DIR"] == str(tmp / "gradio")
        made = tempfile.mkdtemp(prefix="tacq-download-")
        assert made.startswith(str(tmp))
        with open(os.path.join(made, "x.zip"), "w") as f:
            f.write("x")
        assert _mode(os.path.join(made, "x.zip")) == 0o600  # umask 077: nobody else reads it
        assert _mode(tmp_path / "ws") == 0o700
    finally:
        os.umask(old_umask)


def test_sweep_deletes_uploads_and_exports_older_than_a_day(tmp_path):
    tmp = tmp_path / "tmp"
    old_upload = tmp / "gradio" / "abc123"
    new_upload = tmp / "gradio" / "def456"
    old_export = tmp_path / "users" / ("b" * 32) / "exports" / "tacq-2bit-packed"
    kept_examples = tmp_path / "users" / ("b" * 32) / "examples.json"
    for folder in (old_upload, new_upload, old_export):
        folder.mkdir(parents=True)
        (folder / "file").write_text("x")
    kept_examples.write_text("{}")
    day_ago = time.time() - MAX_AGE_S - 60
    for path in (old_upload, old_export, kept_examples):
        os.utime(path, (day_ago, day_ago))
    assert sweep(tmp_path) == 2
    assert not old_upload.exists() and not old_export.exists()
    assert new_upload.exists() and kept_examples.exists()  # recent, or not a temp/export
    assert (tmp / "gradio").is_dir()
