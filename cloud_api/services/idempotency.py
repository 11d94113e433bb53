"""Replaying the stored answer to a repeated create with the same ``Idempotency-Key``.

The key is scoped to the client (API key or staff) that sent it. The same key with a
different body is a client bug, answered with 422 rather than silently replaying.
"""

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import InputError
from cloud_api.models.idempotency import IdempotentRequest


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def replay(session: Session, client: str, key: str, body_hash: str) -> IdempotentRequest | None:
    stored = session.scalar(
        select(IdempotentRequest).where(
            IdempotentRequest.client == client, IdempotentRequest.key == key
        )
    )
    if stored is not None and stored.request_hash != body_hash:
        raise InputError(
            "this Idempotency-Key was used before with a different body: use a new key"
        )
    return stored


def remember(
    session: Session, client: str, key: str, body_hash: str, status_code: int, response: dict
) -> None:
    session.add(
        IdempotentRequest(
            client=client,
            key=key,
            request_hash=body_hash,
            status_code=status_code,
            response=response,
        )
    )
    try:
        session.commit()
    except IntegrityError:
        # Two requests with one key at once: the first stored answer stands.
        session.rollback()
