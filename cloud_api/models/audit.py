"""The audit trail (电子监察): append-only, hash-chained entries and the chain head."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from cloud_api.models.common import UtcDateTime


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_entry"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    at: datetime = Field(sa_column=Column(UtcDateTime(), nullable=False))
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64, index=True)
    # Indexed: a record's page lists the entries about it and its handovers (0012).
    subject: str = Field(max_length=200, index=True)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)


class AuditHead(SQLModel, table=True):
    """One row: the last sequence number and hash. Appenders lock it, so appends are serial."""

    __tablename__ = "audit_head"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    last_seq: int
    last_hash: str = Field(max_length=64)
    # The first entry linked with the keyed HMAC (services/audit.py); those before it were
    # written with plain SHA-256 before migration 0007.
    keyed_from: int = Field(default=1, sa_column_kwargs={"server_default": "1"})


class AuditEntryPublic(SQLModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str
