"""The errors a user can cause or fix, in one place.

Anything raised as a `UserError` (or one of the standard `EXPECTED_ERRORS`) is shown to the
user as one line; any other exception is a bug and keeps its traceback. Callers match
these by type, never by their message.
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure; the message is meant for the user."""


class BackendError(UserError):
    """A call could not be made or was rejected."""


class InstructionLimitExceeded(BackendError):
    """The message ran past the IC's per-message instruction limit and was rolled back."""


#: Failures shown as one line (CLI) or a notification (app) instead of a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (UserError, ValueError, OSError)
