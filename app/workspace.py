"""The app's workspace on disk: private to this OS user, temp files inside it, old ones swept.

On a shared machine other users must not read uploads, examples or exports, so the
process umask is 077 (new folders 0700, files 0600), folders made by older versions are
tightened at start, and Gradio's and Python's temp files live in the workspace instead of
the world-readable system temp folder. Uploads and exports older than a day are deleted,
and an upload that fails (the client drops, or names its file "..") has its temp file
deleted at once (`UploadLeftovers`).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from contextvars import ContextVar
from pathlib import Path

log = logging.getLogger(__name__)

MAX_AGE_S = 24 * 3600  # uploads, downloads and exports older than this are deleted
SWEEP_EVERY_S = 3600


def temp_root(workspace: Path) -> Path:
    return workspace / "tmp"


def prepare(workspace: Path) -> Path:
    """Make the workspace private and route temp files into it; -> its temp folder.

    Call before Gradio is imported: it reads GRADIO_TEMP_DIR at import time.
    """
    os.umask(0o077)
    workspace.mkdir(parents=True, exist_ok=True)
    tighten(workspace)
    tmp = temp_root(workspace)
    (tmp / "gradio").mkdir(parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
    tempfile.tempdir = str(tmp)  # downloads and reports made with tempfile land here too
    return tmp


def tighten(root: Path) -> None:
    """Folders 0700, files 0600 under root (what older versions left 0755 / 0644)."""
    os.chmod(root, 0o700)
    for folder, dirs, files in os.walk(root):
        for d in dirs:
            _chmod(Path(folder) / d, 0o700)
        for f in files:
            _chmod(Path(folder) / f, 0o600)


def _chmod(path: Path, mode: int) -> None:
    try:
        if not path.is_symlink():
            os.chmod(path, mode)
    except OSError as e:  # a file removed meanwhile, or not ours
        log.warning("Could not restrict %s: %s", path, e)


def sweep(workspace: Path, max_age_s: float = MAX_AGE_S, now: float | None = None) -> int:
    """Delete temp entries and user exports older than max_age_s; -> how many."""
    now = time.time() if now is None else now
    roots = [temp_root(workspace), temp_root(workspace) / "gradio"]
    roots += sorted((workspace / "users").glob("*/exports"))
    removed = 0
    for root in roots:
        for entry in sorted(root.iterdir()) if root.is_dir() else []:
            if entry.name == "gradio" and root == temp_root(workspace):
                continue  # Gradio's own folder is swept entry by entry above
            try:
                if now - entry.lstat().st_mtime <= max_age_s:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed += 1
            except OSError as e:
                log.warning("Could not delete old %s: %s", entry, e)
    return removed


def start_sweeper(workspace: Path, every_s: float = SWEEP_EVERY_S) -> threading.Thread:
    """Sweep now and then every `every_s` seconds on a daemon thread."""

    def loop() -> None:
        while True:
            removed = sweep(workspace)
            if removed:
                log.info("Deleted %d upload(s)/export(s) older than a day.", removed)
            time.sleep(every_s)

    t = threading.Thread(target=loop, name="tacq-sweeper", daemon=True)
    t.start()
    return t


UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/upload/")
# The temp files made while handling the current upload request (None outside one).
_made_here: ContextVar[list[str] | None] = ContextVar("tacq_upload_temp_files", default=None)
_hook_installed = False


def _note_temp_file(event: str, args: tuple) -> None:
    if event == "tempfile.mkstemp":
        made = _made_here.get()
        if made is not None:
            made.append(args[0])


class UploadLeftovers:
    """ASGI middleware: after an upload request, delete the temp files it made that are
    still where they were made. Gradio's parser writes each file to a temp file and renames
    it into its cache at the end; when the client drops mid-upload, or the name is refused
    (".."), the temp file stayed behind until the daily sweep (a disk-filling loop).

    Which files a request made is seen through the `tempfile.mkstemp` audit event (PEP 578)
    in that request's context, so concurrent uploads never delete each other's files.
    """

    def __init__(self, app) -> None:
        global _hook_installed
        self.app = app
        if not _hook_installed:  # audit hooks cannot be removed: one per process
            sys.addaudithook(_note_temp_file)
            _hook_installed = True

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") not in UPLOAD_PATHS:
            return await self.app(scope, receive, send)
        made: list[str] = []
        token = _made_here.set(made)
        try:
            await self.app(scope, receive, send)
        finally:
            _made_here.reset(token)
            for name in made:  # a kept upload was renamed away; these were not
                _remove_leftover(Path(name))


def _remove_leftover(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("Could not delete the temp file of a failed upload %s: %s", path, e)
