"""The rating page behind the thank-you SMS, and the staff summary, on SQLite and PostgreSQL.

The link comes from the receipt SMS the console provider actually "sent" after a pickup;
every refusal is checked to change nothing (no rating row, no audit entry).
"""

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from sqlmodel import Session, select

from cloud_api.core.config import RATING_URL_MAX
from cloud_api.core.rating_links import RatingLinks
from cloud_api.models.audit import AuditEntry
from cloud_api.models.rating import Rating
from cloud_api.sms.templates import render, segments
from tests.cloud_api.conftest import ADMIN_PASSWORD, locker_body, login, make_record
from tests.cloud_api.helpers import assert_problem
from tests.cloud_api.test_security_headers import _check_headers

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
LINK = re.compile(r"https?://\S+/rate/(\S+)")


def collected_pickup(world, app, console, number="XA-R-1", locker_id=None, headers=None):
    """A licence loaded, deposited and collected at a locker; the handover and the token of
    the link in the thank-you SMS sent for it."""
    locker_id = locker_id or world.locker_id
    headers = headers or world.locker_headers
    make_record(world.client, world.integrator_headers, number=number)
    for status in ("documents_received", "approved"):
        r = world.client.post(
            f"/api/v1/records/{number}/transitions",
            json={"status": status},
            headers=world.integrator_headers,
        )
        assert r.status_code == 200, r.text
    r = world.client.post(
        "/api/v1/staff/loads",
        headers=world.admin_headers,
        json={"application_number": number, "locker_id": locker_id, "size": "S"},
    )
    assert r.status_code == 201, r.text
    handover = r.json()
    for step in ("deposited", "collected"):
        r = world.client.post(
            f"/api/v1/lockers/{locker_id}/handovers/{handover['id']}/{step}", headers=headers
        )
        assert r.status_code == 200, r.text
    app.state.dispatcher.run_once()
    [receipt] = [
        m for m in console.inbox() if "满意度评价" in m.body and f"/{handover['id']}." in m.body
    ]
    return handover, LINK.search(receipt.body).group(1)


def _ratings(engine) -> list[Rating]:
    with Session(engine) as s:
        return list(s.exec(select(Rating)).all())


def _audited(engine) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == "rating.submitted")).all())


def _post(client, token, body: str, **kw):
    return client.post(f"/rate/{token}", content=body, headers=FORM, follow_redirects=False, **kw)


def test_the_sms_link_opens_a_form_and_one_rating_is_stored_and_audited(
    world, app, console, engine
):
    handover, token = collected_pickup(world, app, console)
    page = world.client.get(f"/rate/{token}")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert "满意度评价" in page.text and "Rate our service" in page.text
    assert 'name="score"' in page.text and "国际港务区政务中心" in page.text
    assert "<script" not in page.text  # no script at all, nothing from the internet
    assert page.headers["cache-control"] == "no-store"
    css = world.client.get("/rate/rating.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")

    r = _post(world.client, token, "score=4&comment=%E5%BE%88%E5%BF%AB+quick")
    assert r.status_code == 303, r.text
    assert r.headers["location"] == token
    thanks = world.client.get(f"/rate/{token}")
    assert thanks.status_code == 200
    assert 'data-score="4"' in thanks.text and "很快 quick" in thanks.text

    [rating] = _ratings(engine)
    assert (rating.handover_id, rating.score, rating.scale, rating.comment) == (
        handover["id"],
        4,
        "stars5",
        "很快 quick",
    )
    [entry] = _audited(engine)
    assert entry.subject == f"handover:{handover['id']}"
    assert entry.detail == {
        "handover_id": handover["id"],
        "record_id": rating.record_id,
        "application_no": "XA-R-1",
        "score": 4,
        "scale": "stars5",
        "comment": "很快 quick",
    }


def test_a_second_submit_is_refused_and_overwrites_nothing(world, app, console, engine):
    _, token = collected_pickup(world, app, console)
    assert _post(world.client, token, "score=5&comment=great").status_code == 303
    again = _post(world.client, token, "score=1&comment=changed+my+mind")
    assert again.status_code == 409, again.text
    assert "您已评价过" in again.text and "already rated" in again.text
    [rating] = _ratings(engine)
    assert (rating.score, rating.comment) == (5, "great")
    assert len(_audited(engine)) == 1


def test_a_forged_or_altered_token_gets_a_clear_page_and_changes_nothing(
    world, app, console, engine
):
    first, token = collected_pickup(world, app, console, number="XA-R-1")
    second, _ = collected_pickup(world, app, console, number="XA-R-2")
    handover_id, expires, sig = token.split(".")
    forged = [
        f"{second['id']}.{expires}.{sig}",  # someone else's pickup under my signature
        f"{handover_id}.{int(expires) + 86400 * 365}.{sig}",  # a longer life
        f"{handover_id}.{expires}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}",
        RatingLinks(b"the attacker's own key, 32 bytes", "", timedelta(days=30)).token(
            second["id"], app.state.clock()
        ),
        "1.1.AAAAAAAAAAAAAAAAAAAAAA",
        "not-a-token",
        "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    ]
    for token_ in forged:
        for response in (
            world.client.get(f"/rate/{token_}"),
            _post(world.client, token_, "score=1&comment=forged"),
        ):
            assert response.status_code == 404, (token_, response.text)
            assert "此评价链接无效" in response.text and "not valid" in response.text
            assert "<script>alert" not in response.text
    assert _ratings(engine) == [] and _audited(engine) == []


def test_an_expired_link_is_refused_with_its_own_page(world, app, console, engine, clock):
    _, token = collected_pickup(world, app, console)
    clock.advance(days=30, seconds=1)
    for response in (world.client.get(f"/rate/{token}"), _post(world.client, token, "score=3")):
        assert response.status_code == 410, response.text
        assert "已过期" in response.text and "expired" in response.text
    assert _ratings(engine) == []


def test_the_expiry_follows_the_setting(world, app, console, clock):
    _, token = collected_pickup(world, app, console)
    clock.advance(days=29)
    assert world.client.get(f"/rate/{token}").status_code == 200


def test_a_signed_link_for_a_handover_that_is_no_collected_pickup_is_refused(
    world, app, console, engine
):
    """Only a collected pickup can be rated, whatever link names it (a drop-off, a pickup
    still in the locker, a handover that does not exist)."""
    make_record(world.client, world.integrator_headers, number="XA-R-9")
    dropoff = world.client.post(
        "/api/v1/handovers/dropoff",
        headers=world.integrator_headers,
        json={"application_number": "XA-R-9", "locker_id": world.locker_id},
    ).json()
    links = app.state.policy.rating_links
    for handover_id in (dropoff["id"], 999_999):
        token = links.token(handover_id, app.state.clock())
        assert world.client.get(f"/rate/{token}").status_code == 404
        refused = _post(world.client, token, "score=5")
        assert refused.status_code == 404 and "无法评价" in refused.text
    assert _ratings(engine) == []


@pytest.mark.parametrize(
    ("body", "reason", "status"),
    [
        ("comment=no+score", "score_missing", 422),
        ("score=0", "score_missing", 422),
        ("score=6", "score_missing", 422),
        ("score=4.5", "score_missing", 422),
        ("score=%EF%BC%94", "score_missing", 422),  # a full-width 4
        ("score=", "score_missing", 422),
        ("score=3&comment=" + "a" * 501, "comment_too_long", 422),
        ("score=3&comment=bell%07", "comment_control", 422),
        ("score=3&comment=nul%00", "comment_control", 422),
        ("score=3&score=4", "form_invalid", 422),
        ("score=3&comment=%FF%FE", "form_invalid", 422),
        ("score=3&" + "&".join(f"f{i}=1" for i in range(20)), "form_invalid", 422),
        ("score=3&comment=" + "a" * 20000, "form_too_large", 413),
    ],
)
def test_a_bad_form_is_refused_clearly_and_stores_nothing(
    world, app, console, engine, body, reason, status
):
    _, token = collected_pickup(world, app, console)
    r = _post(world.client, token, body)
    assert r.status_code == status, r.text
    assert f'data-reason="{reason}"' in r.text
    assert r.headers["content-type"].startswith("text/html")
    assert _ratings(engine) == [] and _audited(engine) == []
    # The link still works afterwards.
    assert _post(world.client, token, "score=2").status_code == 303


def test_a_form_of_another_media_type_is_refused(world, app, console, engine):
    _, token = collected_pickup(world, app, console)
    for headers, content in (
        ({"Content-Type": "application/json"}, b'{"score": 5}'),
        ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
        ({}, b"score=5"),
    ):
        r = world.client.post(f"/rate/{token}", content=content, headers=headers)
        assert r.status_code == 415, r.text
    assert _ratings(engine) == []


def test_a_comment_with_markup_is_stored_as_text_and_shown_escaped(world, app, console, engine):
    _, token = collected_pickup(world, app, console)
    payload = '<img src=x onerror=alert(1)><script>alert("x")</script> & "quotes"\nline 2'

    assert (
        _post(world.client, token, urlencode({"score": 1, "comment": payload})).status_code == 303
    )
    [rating] = _ratings(engine)
    assert rating.comment == payload
    page = world.client.get(f"/rate/{token}").text
    assert "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;" in page
    # A bad score sends the typed comment back into the form, escaped there too.
    _, other = collected_pickup(world, app, console, number="XA-R-2")
    again = _post(world.client, other, urlencode({"score": 9, "comment": payload}))
    assert again.status_code == 422
    assert "<img" not in again.text and "&lt;/script&gt;" in again.text


def test_the_receipt_with_its_link_fits_three_sms_parts(settings):
    longest = "https://" + "x" * (RATING_URL_MAX - len("https://"))
    links = RatingLinks(settings.rating_key(), longest, timedelta(days=30))
    link = links.link(2**31 - 1, datetime(2099, 12, 31, tzinfo=UTC))
    body = render("receipt", {"rating_url": link})
    assert segments(body) <= 3, (segments(body), len(body))


# --- the staff summary ----------------------------------------------------------------------


def _staff(world, username, role, site=None):
    body = {"username": username, "password": "a long password 1", "role": role}
    if site is not None:
        body["site"] = site
    r = world.client.post("/api/v1/staff", json=body, headers=world.admin_headers)
    assert r.status_code == 201, r.text
    return login(world.client, username, "a long password 1")


def test_the_summary_counts_per_site_and_week(world, app, console, clock):
    other = locker_body("xa-east-002", sizes="SSM") | {"site": "东区政务中心"}
    r = world.client.post("/api/v1/lockers", json=other, headers=world.admin_headers)
    assert r.status_code == 201, r.text
    east_headers = {"X-Locker-Key": r.json()["locker_key"]}

    scores = iter([5, 4, 1, 3])
    for n in range(3):
        _, token = collected_pickup(world, app, console, number=f"XA-W-{n}")
        assert _post(world.client, token, f"score={next(scores)}&comment=c{n}").status_code == 303
    _, token = collected_pickup(
        world, app, console, number="XA-E-1", locker_id="xa-east-002", headers=east_headers
    )
    assert _post(world.client, token, f"score={next(scores)}").status_code == 303
    clock.advance(days=7)  # the next week
    world.admin_headers = login(world.client, "admin", ADMIN_PASSWORD)
    _, token = collected_pickup(world, app, console, number="XA-W-9")
    assert _post(world.client, token, "score=2&comment=late").status_code == 303

    r = world.client.get("/api/v1/dashboard/ratings", headers=world.admin_headers)
    assert r.status_code == 200, r.text
    summary = r.json()
    assert summary["scale"] == "stars5" and summary["sites"] is None
    groups = [
        (g["week_start"], g["site"], g["count"], g["average"], g["distribution"], g["levels"])
        for g in summary["groups"]
    ]
    this_week, last_week = "2025-03-10", "2025-03-03"  # the clock starts Wed 5 March 2025
    assert groups == [
        (
            this_week,
            "国际港务区政务中心",
            1,
            2.0,
            {"1": 0, "2": 1, "3": 0, "4": 0, "5": 0},
            {"good": 0, "fair": 0, "poor": 1},
        ),
        (
            last_week,
            "东区政务中心",
            1,
            3.0,
            {"1": 0, "2": 0, "3": 1, "4": 0, "5": 0},
            {"good": 0, "fair": 1, "poor": 0},
        ),
        (
            last_week,
            "国际港务区政务中心",
            3,
            3.33,
            {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1},
            {"good": 2, "fair": 0, "poor": 1},
        ),
    ]
    assert [c["comment"] for c in summary["comments"]] == ["late", "c2", "c1", "c0"]
    assert summary["comments"][0]["application_number"] == "XA-W-9"

    one_week = world.client.get(
        "/api/v1/dashboard/ratings", params={"weeks": 1}, headers=world.admin_headers
    ).json()
    assert [(g["week_start"], g["count"]) for g in one_week["groups"]] == [(this_week, 1)]

    # A supervisor of the east site sees that site only, and may not ask for another.
    east = _staff(world, "east-boss", "supervisor", "东区政务中心")
    mine = world.client.get("/api/v1/dashboard/ratings", headers=east).json()
    assert mine["sites"] == ["东区政务中心"]
    assert {g["site"] for g in mine["groups"]} == {"东区政务中心"}
    assert mine["comments"] == []
    refused = world.client.get(
        "/api/v1/dashboard/ratings", params={"site": "国际港务区政务中心"}, headers=east
    )
    assert_problem(refused, 403)


def test_the_summary_is_for_supervisors_and_admins_only(world):
    for role in ("staff", "technician"):
        headers = _staff(world, f"a-{role}", role)
        assert_problem(world.client.get("/api/v1/dashboard/ratings", headers=headers), 403)
    assert_problem(
        world.client.get("/api/v1/dashboard/ratings", headers=world.integrator_headers), 403
    )
    assert_problem(world.client.get("/api/v1/dashboard/ratings"), 401)
    boss = _staff(world, "any-boss", "supervisor")
    assert world.client.get("/api/v1/dashboard/ratings", headers=boss).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"weeks": 0},
        {"weeks": 27},
        {"weeks": "x"},
        {"comments": 101},
        {"site": ""},
        {"site": "a\x00"},
    ],
)
def test_bad_summary_queries_are_refused(world, params):
    r = world.client.get("/api/v1/dashboard/ratings", params=params, headers=world.admin_headers)
    assert_problem(r, 422)


def test_the_rating_pages_carry_the_security_headers(world, app, console):
    """The token is in the address: no Referer may carry it away (no-referrer), and the page
    may not be framed nor run a script from anywhere."""
    _, token = collected_pickup(world, app, console)
    for response in (
        world.client.get(f"/rate/{token}"),
        world.client.get("/rate/rating.css"),
        world.client.get("/rate/forged"),
        _post(world.client, token, "score=9"),
        _post(world.client, token, "score=5"),
    ):
        _check_headers(response)
