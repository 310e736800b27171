import datetime as dt

from sqlalchemy import Column, ForeignKey, Index, String, Table, Text, func
from sqlalchemy.orm import Mapped, mapped_column, relationship

from idp.db import Base, UTCDateTime, utcnow

user_roles = Table(
    "user_roles",
    Base.metadata,
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column("granted_at", UTCDateTime(), nullable=False, default=utcnow),
)

role_modules = Table(
    "role_modules",
    Base.metadata,
    Column("role_id", ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
    Column("module_id", ForeignKey("modules.id", ondelete="CASCADE"), primary_key=True),
)


class Role(Base):
    """A named role; it grants access to the modules linked to it."""

    __tablename__ = "roles"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name_ms: Mapped[str] = mapped_column(String(200))
    display_name_en: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    users = relationship("User", secondary=user_roles, back_populates="roles")
    modules = relationship("Module", secondary=role_modules, back_populates="roles")


class Module(Base):
    """A MOEIS module: one or more service providers users reach by role."""

    __tablename__ = "modules"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    display_name_ms: Mapped[str] = mapped_column(String(200))
    display_name_en: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    roles = relationship("Role", secondary=role_modules, back_populates="modules")
    service_providers = relationship("ServiceProvider", back_populates="module")


# Codes and names are unique whatever their case: "EMIS" and "emis" would be
# two modules an operator cannot tell apart in a list or a command line. The
# database enforces it (migration 0007), so no race between two commands
# slips a second spelling in.
Index("uq_modules_code_lower", func.lower(Module.code), unique=True)
Index("uq_roles_name_lower", func.lower(Role.name), unique=True)
