"""Who a page load is: a server-signed user id the browser keeps, checked on every load.

The browser holds uid.HMAC(server key, uid) in gr.BrowserState; the key never leaves the
workspace, so a client cannot claim another user's folder (app.state keeps the folders).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_UID = re.compile(r"[0-9a-f]{32}")  # a user's folder name; also the old unsigned browser id
SIGNED_MARK = ".signed"  # in a user folder made for a signed id
_TOKEN = re.compile(r"([0-9a-f]{32})\.([0-9a-f]{64})")  # what the browser keeps: uid.hmac


def browser_secret(workspace: Path) -> str:
    """A per-workspace key for the browser-stored id, so a restart still recognises users."""
    path = workspace / ".browser_secret"
    if not path.is_file():
        workspace.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass(frozen=True)
class Identity:
    """Who a page load is: the user's folder id and the signed token the browser keeps."""

    uid: str
    token: str
    issued: bool  # a new token: the only case in which it is sent to the browser


def identify(browser_value: object, workspace: Path) -> Identity:
    """Check the browser's token; anything this server did not sign gets a new user.

    Tokens are uid.HMAC-SHA256(server key, uid). The key stays in the workspace (0600) and
    is never sent anywhere (unlike the BrowserState secret, which /config publishes), so a
    client cannot make a token for someone else's uid. An old unsigned id (a bare uid)
    is migrated once: its folder moves to a new signed uid, so presenting the old id a
    second time finds nothing.
    """
    if isinstance(browser_value, str):
        m = _TOKEN.fullmatch(browser_value)
        if m and hmac.compare_digest(_sign(m[1], workspace), browser_value):
            return Identity(m[1], browser_value, issued=False)
        if _UID.fullmatch(browser_value):
            moved = _migrate_unsigned(browser_value, workspace)
            if moved is not None:
                return moved
    uid = uuid.uuid4().hex
    return Identity(uid, _sign(uid, workspace), issued=True)


def _sign(uid: str, workspace: Path) -> str:
    mac = hmac.new(_id_key(workspace), uid.encode(), hashlib.sha256).hexdigest()
    return f"{uid}.{mac}"


def _id_key(workspace: Path) -> bytes:
    """The server-only signing key, made once per workspace."""
    path = workspace / ".id_key"
    if not path.is_file():
        workspace.mkdir(parents=True, exist_ok=True)
        tmp = workspace / f".id_key.{os.getpid()}.part"
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # first writer wins; a racing second keeps the first key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text().strip().encode()


def _migrate_unsigned(old_uid: str, workspace: Path) -> Identity | None:
    src = workspace / "users" / old_uid
    if not src.is_dir() or (src / SIGNED_MARK).exists():
        return None  # nothing saved, or a signed user's folder: its bare uid proves nothing
    uid = uuid.uuid4().hex
    try:
        os.rename(src, workspace / "users" / uid)  # atomic: only one presenter wins
    except OSError:
        return None
    (workspace / "users" / uid / SIGNED_MARK).touch()
    log.info("Moved the data of an unsigned browser id to a signed one.")
    return Identity(uid, _sign(uid, workspace), issued=True)
