"""Webhook subscribers (administrators): created with a secret shown once and never again,
URLs checked with a reason, changes audited, nobody else may manage them."""

import re

import pytest
from sqlalchemy import func
from sqlmodel import Session, select

from cloud_api.errors import InputError
from cloud_api.models.audit import AuditEntry
from cloud_api.models.webhook import WebhookSubscriber
from cloud_api.webhooks.signing import subscriber_secret
from cloud_api.webhooks.urls import URL_PATTERN, check_url
from tests.cloud_api.conftest import login
from tests.cloud_api.helpers import assert_problem
from tests.cloud_api.webhook_fixtures import (
    SUBSCRIBERS,
    issue_key,
    settings,  # noqa: F401 (fixture)
    subscribe,
    world_key_id,
)

URL = "https://approval.example.cn/hooks/xinbao"


def _count(engine) -> int:
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(WebhookSubscriber))


def test_the_secret_is_shown_once_and_never_again(world, engine, settings):  # noqa: F811
    created = subscribe(world, world_key_id(world), URL)
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    with Session(engine) as s:
        row = s.get(WebhookSubscriber, created["id"])
        # Not stored: only a salt the secret is derived from with the master secret.
        assert secret not in str(row.model_dump())
        assert subscriber_secret(settings.master_key, row.secret_salt) == secret
        salt = row.secret_salt
    listed = world.client.get(SUBSCRIBERS, headers=world.admin_headers)
    one = world.client.get(f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers)
    changed = world.client.patch(
        f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers, json={"name": "CRM"}
    )
    for answer in (listed, one, changed):
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text and salt not in answer.text
        assert "secret" not in answer.text
    assert {k: v for k, v in created.items() if k not in ("secret", "name", "updated_at")} == {
        k: v for k, v in one.json().items() if k not in ("name", "updated_at")
    }

    rotated = world.client.post(
        f"{SUBSCRIBERS}/{created['id']}/rotate-secret", headers=world.admin_headers
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != secret
    with Session(engine) as s:
        actions = s.exec(
            select(AuditEntry.action)
            .where(AuditEntry.action.like("webhook.%"))
            .order_by(AuditEntry.seq)
        ).all()
        entries = s.exec(select(AuditEntry)).all()
    assert actions == [
        "webhook.subscriber_created",
        "webhook.subscriber_updated",
        "webhook.secret_rotated",
    ]
    assert not any(secret in str(e.detail) for e in entries)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://approval.example.cn/hook", "webhook-url-scheme"),
        ("javascript:alert(1)", "webhook-url-scheme"),
        ("file:///etc/passwd", "webhook-url-scheme"),
        ("approval.example.cn/hook", "webhook-url-scheme"),
        ("https://", "webhook-url-host"),
        ("http:///path-only", "webhook-url-host"),
        ("https://user:pw@approval.example.cn/hook", "webhook-url-credentials"),
        ("https://approval.example.cn/hook#part", "webhook-url-fragment"),
        ("https://approval.example.cn/a hook", "webhook-url-characters"),
        ("https://approval.example.cn/\x00", "webhook-url-characters"),
        ("https://approval.example.cn:99999/hook", "webhook-url-port"),
        ("https://approval.example.cn:0/hook", "webhook-url-port"),
        ("https://approval..example.cn/hook", "webhook-url-host"),
        ("https://" + "a" * 64 + ".cn/hook", "webhook-url-host"),
        ("https://xn--/hook", "webhook-url-host"),
        ("https://approval.example.cn/" + "a" * 2000, None),
    ],
)
def test_bad_urls_are_refused_with_a_reason_and_change_nothing(world, engine, url, reason):
    key_id = world_key_id(world)
    r = world.client.post(
        SUBSCRIBERS,
        headers=world.admin_headers,
        json={"api_key_id": key_id, "name": "bad", "url": url},
    )
    body = assert_problem(r, 422)
    if reason is not None:
        assert body["reason"] == reason
        assert body["message_zh"] and body["message_en"]
    assert _count(engine) == 0
    # The same refusal when an existing subscriber is moved to that URL.
    created = subscribe(world, key_id, URL)
    moved = world.client.patch(
        f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers, json={"url": url}
    )
    assert_problem(moved, 422)
    assert (
        world.client.get(f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers).json()[
            "url"
        ]
        == URL
    )


def test_http_and_private_addresses_are_taken(world):
    for url in ("http://10.0.0.7:8080/hook", "HTTPS://Approval.Example.cn/h?x=1"):
        assert subscribe(world, world_key_id(world), url)["url"] == url
    # A pasted line break around it is dropped, not refused.
    assert subscribe(world, world_key_id(world), f" {URL}\n")["url"] == URL


def test_the_published_pattern_takes_only_urls_the_api_takes():
    """The OpenAPI document's pattern (for clients and the schema fuzz) is a subset of what
    check_url accepts, and refuses what it refuses."""
    pattern = re.compile(URL_PATTERN)
    good = ["https://a.b/c?d=1", "HTTP://10.0.0.1:8080", "https://a:65535/x@y?z=%20", "http://h"]
    bad = ["http://x:0", "https://u@h/", "ftp://a", "http://a b", "http://a/#x", "http://a:65536"]
    bad += ["http://a..b/", "http://.a/", "http://" + "a" * 64 + "/"]
    for url in good:
        assert pattern.match(url) and check_url(url) == url
    for url in bad:
        assert not pattern.match(url)
        with pytest.raises(InputError):
            check_url(url)


def test_include_codes_needs_the_codes_read_scope(world, engine):
    plain = world_key_id(world)
    r = world.client.post(
        SUBSCRIBERS,
        headers=world.admin_headers,
        json={"api_key_id": plain, "name": "p", "url": URL, "include_codes": True},
    )
    assert assert_problem(r, 409)["reason"] == "webhook-codes-scope"
    assert _count(engine) == 0
    created = subscribe(world, plain, URL)
    opt_in = world.client.patch(
        f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers, json={"include_codes": True}
    )
    assert assert_problem(opt_in, 409)["reason"] == "webhook-codes-scope"
    reader = issue_key(world.client, world.admin_headers, "centre", ["codes:read"])
    assert subscribe(world, reader["id"], URL, include_codes=True)["include_codes"] is True


def test_unknown_or_revoked_keys_get_no_subscriber(world, engine):
    missing = world.client.post(
        SUBSCRIBERS,
        headers=world.admin_headers,
        json={"api_key_id": 999, "name": "x", "url": URL},
    )
    assert_problem(missing, 404)
    other = issue_key(world.client, world.admin_headers, "old", ["records:write"])
    assert (
        world.client.post(f"/api/v1/api-keys/{other['id']}/revoke", headers=world.admin_headers)
    ).status_code == 200
    revoked = world.client.post(
        SUBSCRIBERS,
        headers=world.admin_headers,
        json={"api_key_id": other["id"], "name": "x", "url": URL},
    )
    assert_problem(revoked, 409)
    for body in ({"api_key_id": 0, "name": "x", "url": URL}, {"name": "x", "url": URL}, {}):
        assert_problem(world.client.post(SUBSCRIBERS, headers=world.admin_headers, json=body), 422)
    assert _count(engine) == 0


def test_only_admins_manage_subscribers(world, engine, client):
    created = subscribe(world, world_key_id(world), URL)
    r = client.post(
        "/api/v1/staff",
        headers=world.admin_headers,
        json={"username": "li.na", "password": "long enough password", "role": "supervisor"},
    )
    assert r.status_code == 201, r.text
    supervisor = login(client, "li.na", "long enough password")
    body = {"api_key_id": world_key_id(world), "name": "x", "url": URL}
    for headers, status in ((supervisor, 403), (world.integrator_headers, 403), ({}, 401)):
        assert_problem(client.post(SUBSCRIBERS, headers=headers, json=body), status)
        assert_problem(client.get(SUBSCRIBERS, headers=headers), status)
        assert_problem(
            client.patch(f"{SUBSCRIBERS}/{created['id']}", headers=headers, json={"active": False}),
            status,
        )
        assert_problem(
            client.post(f"{SUBSCRIBERS}/{created['id']}/rotate-secret", headers=headers), status
        )
        assert_problem(client.get("/api/v1/webhooks/events", headers=headers), status)
        assert_problem(client.post("/api/v1/webhooks/events/1/replay", headers=headers), status)
    assert _count(engine) == 1
    assert client.get(f"{SUBSCRIBERS}/{created['id']}", headers=world.admin_headers).json()[
        "active"
    ]
