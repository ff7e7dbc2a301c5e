"""The one error type the library raises for things a user can fix."""

from __future__ import annotations


class TacqError(Exception):
    """A problem the user can act on; the message says what happened and what to change."""


class Cancelled(TacqError):
    """The user stopped a long step. Nothing partial was saved."""
