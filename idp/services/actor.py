"""Who performs an administrative operation, through what, and from where.

Every operation of :mod:`idp.services.accounts`, :mod:`idp.services.modules`
and :mod:`idp.services.service_providers` takes an :class:`Actor` and
records it with its audit event: ``by`` in the event's detail names the
front end (``idp-admin`` for the operator's command line), the event's
``actor_user_id`` the signed-in administrator and its ``client_address``
where they were, when there are such things (the console's; a shell command
has neither).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

#: The command line's name in audit events, as since the first release.
COMMAND_LINE = "idp-admin"


@dataclass(frozen=True)
class Actor:
    by: str
    user_id: uuid.UUID | None = None
    address: str | None = None

    @classmethod
    def command_line(cls) -> Actor:
        """The operator at a shell on a server: ``idp-admin``."""
        return cls(COMMAND_LINE)

    def record(
        self,
        audit: Any,  # an IAuditLog
        event: str,
        *,
        subject_user_id: uuid.UUID | None = None,
        **detail,
    ) -> None:
        """Append ``event`` to the audit log as done by this actor."""
        audit.record(
            event,
            subject_user_id=subject_user_id,
            actor_user_id=self.user_id,
            client_address=self.address,
            detail={"by": self.by, **detail},
        )
