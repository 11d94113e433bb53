"""Shared by the webhook tests (imported by them: ``from tests.cloud_api.webhook_fixtures
import *`` style, fixture by fixture).

- ``settings``: the usual test settings with webhook retries in tenths of a second, so a test
  waits on real HTTP attempts, not on production back-off.
- ``receiver``: a real HTTP subscriber (tests/support/webhook_receiver.py), started and
  stopped around the test.
- helpers to issue keys, subscribe them, and run the delivery worker until something holds.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_api.core.config import Settings
from tests.support.waiting import wait_until
from tests.support.webhook_receiver import WebhookReceiver

KEYS = "/api/v1/api-keys"
SUBSCRIBERS = "/api/v1/webhooks/subscribers"
EVENTS = "/api/v1/webhooks/events"
INTEGRATOR_SCOPES = ["records:write", "handovers:write", "lockers:read"]


@pytest.fixture
def settings(db_url) -> Settings:
    return Settings(
        demo=True,
        database_url=db_url,
        run_background=False,
        webhook_backoff_base_seconds=0.05,
        webhook_backoff_max_seconds=0.2,
        webhook_max_attempts=50,
        webhook_timeout_seconds=5,
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    rx = WebhookReceiver().start()
    try:
        yield rx
    finally:
        rx.stop()


def issue_key(client: TestClient, admin: dict, name: str, scopes: list[str]) -> dict:
    """A new integrator key: ``{"id", "key", "headers", ...}``."""
    r = client.post(KEYS, headers=admin, json={"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    issued = r.json()
    return issued | {"headers": {"X-API-Key": issued["key"]}}


def world_key_id(world) -> int:
    """The id of the world's integrator key (the first key made)."""
    keys = world.client.get(KEYS, headers=world.admin_headers).json()
    return min(k["id"] for k in keys)


def subscribe(world, key_id: int, url: str, include_codes: bool = False, name="platform") -> dict:
    r = world.client.post(
        SUBSCRIBERS,
        headers=world.admin_headers,
        json={"api_key_id": key_id, "name": name, "url": url, "include_codes": include_codes},
    )
    assert r.status_code == 201, r.text
    return r.json()


def deliver_until(app, predicate: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Run the app's delivery worker round after round until ``predicate()`` holds."""
    dispatcher = app.state.webhooks

    def step() -> Any:
        dispatcher.run_once()
        return predicate()

    return wait_until(step, timeout, what)


def events(world, **params) -> list[dict]:
    r = world.client.get(EVENTS, headers=world.admin_headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()
