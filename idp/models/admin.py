import datetime as dt
import enum
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.db import Base, utcnow


class AdminRole(enum.StrEnum):
    """The admin console's roles; :mod:`idp.authz` says what each may do."""

    HELPDESK = "helpdesk"
    REGISTRY = "registry"
    AUDITOR = "auditor"
    SUPERADMIN = "superadmin"


class AdminGrant(Base):
    """One admin role held by one user.

    Separate from :class:`idp.models.Role` on purpose: those roles decide
    which MOEIS modules a user reaches through SSO and are managed by the
    ``registry`` admins; these decide who may administer idMe itself, and
    only a ``superadmin`` (or the operator's shell) changes them. A grant
    takes effect only in a session that passed the second factor.
    """

    __tablename__ = "admin_grants"
    __table_args__ = (
        CheckConstraint(
            "role IN ({})".format(", ".join(f"'{role.value}'" for role in AdminRole)),
            name="role",
        ),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The superadmin who granted it; None when granted from the command line.
    granted_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
