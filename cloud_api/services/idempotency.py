"""Creates that carry an ``Idempotency-Key`` header happen at most once per key.

The key is scoped to the client (API key or staff) that sent it. The stored answer is written
in the same transaction as the thing it created, so there is never a create without its
answer (a retry after a lost response replays it) nor an answer without its create.

Two requests with the same key at once: the first inserts the key's row before it does any
work. On PostgreSQL the second one's insert waits on the unique index until the first commits,
then fails, and the second replays the first's answer; on SQLite every transaction holds the
write lock (core/db.py), so the second starts only after the first has committed. Either way
both get the same answer and one thing is created. The same key with a different body is a
client bug, answered with 422 rather than silently replaying.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import Conflict, InputError
from cloud_api.models.idempotency import IdempotentRequest


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def _stored(session: Session, client: str, key: str, body_hash: str) -> IdempotentRequest | None:
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


def at_most_once(
    session: Session,
    client: str,
    key: str,
    body_hash: str,
    perform: Callable[[], tuple[int, dict[str, Any]]],
) -> Answer:
    """The answer ``perform`` gave for this key, running it only if it never ran.

    ``perform`` does its work in ``session`` without committing and returns (status, body);
    this function commits its work together with the stored answer.
    """
    stored = _stored(session, client, key, body_hash)
    if stored is not None:
        return Answer(stored.status_code, stored.response, replayed=True)
    claim = IdempotentRequest(
        client=client, key=key, request_hash=body_hash, status_code=0, response={}
    )
    session.add(claim)
    try:
        session.flush()
    except IntegrityError:
        # A request with the same key committed while we waited for its row: replay it.
        session.rollback()
        stored = _stored(session, client, key, body_hash)
        if stored is None:  # it was there a moment ago and rows are never deleted
            raise Conflict("a request with this Idempotency-Key is in progress: retry") from None
        return Answer(stored.status_code, stored.response, replayed=True)
    status_code, body = perform()
    claim.status_code, claim.response = status_code, body
    session.commit()
    return Answer(status_code, body, replayed=False)
