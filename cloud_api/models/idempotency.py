"""Stored answers to creates that carried an ``Idempotency-Key`` header."""

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from cloud_api.models.common import UtcDateTime, utcnow


class IdempotentRequest(SQLModel, table=True):
    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("client", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    client: str = Field(max_length=100)
    key: str = Field(max_length=200)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UtcDateTime(), nullable=False)
    )
