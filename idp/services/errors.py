"""The refusals of the administrative services, in one place.

An operation that is refused raises one of these, and nothing it began is
left behind (each service runs an operation in a SAVEPOINT, :func:`atomic`):
so a front end that catches the refusal and lets its transaction commit (a
console page showing the reason) writes nothing either.

Each carries a stable ``code`` (``role.in_use``, ``account.email_taken``)
that a front end keys its wording on, the values that wording needs in
``params``, the input it is about in ``field`` (None when it is about no
one input), and ``message``: the operator's English sentence, which
``idp-admin`` prints (prefixed with the option ``field`` names). The
console translates by ``code`` and ``params`` rather than show ``message``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Refused(Exception):
    """An operation refused; nothing was written."""

    def __init__(
        self, code: str, message: str, *, field: str | None = None, **params: Any
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.params = params

    def __str__(self) -> str:
        return self.message


class Invalid(Refused):
    """A value given is not acceptable (too long, control characters...)."""


class NotFound(Refused):
    """What the operation names does not exist."""


class Conflict(Refused):
    """The operation contradicts what is there: a name taken, a row in use."""


@contextmanager
def atomic(dbsession) -> Iterator[None]:
    """Run the block in a SAVEPOINT: a refusal (or any error) undoes it all.

    Without it, a refusal raised half-way (an SP's policy checked one
    option after another, say) would leave the earlier changes on the
    session, for the caller's commit to write.
    """
    with dbsession.begin_nested():
        yield
