"""Signed rating links (core/rating_links.py): each attack on the token is refused.

The attacker holds one genuine link (their own thank-you SMS) and tries to rate another
handover with it, to make it last longer, to make one up with a key of their own, or to slip
a staff token in; or sends malformed strings. Only the genuine link within its time opens.
"""

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from cloud_api.core import security
from cloud_api.core.config import Settings
from cloud_api.core.rating_links import RatingLinkError, RatingLinks

NOW = datetime(2026, 3, 5, 2, 0, tzinfo=UTC)


@pytest.fixture
def links() -> RatingLinks:
    return RatingLinks.from_settings(Settings(demo=True, rating_url="https://r.example.cn/rate"))


def _parts(token: str) -> tuple[str, str, str]:
    handover_id, expires, sig = token.split(".")
    return handover_id, expires, sig


def test_a_genuine_link_names_its_handover_and_expiry(links):
    link = links.link(42, NOW)
    assert link.startswith("https://r.example.cn/rate/42.")
    ticket = links.read(link.rsplit("/", 1)[1], NOW + timedelta(days=29))
    assert ticket.handover_id == 42
    assert ticket.expires_at == NOW + timedelta(days=30)


def test_another_handover_id_under_the_same_signature_is_refused(links):
    _, expires, sig = _parts(links.token(42, NOW))
    for other in ("43", "4", "420", "1"):
        with pytest.raises(RatingLinkError) as refused:
            links.read(f"{other}.{expires}.{sig}", NOW)
        assert not refused.value.expired


def test_a_later_expiry_under_the_same_signature_is_refused(links):
    handover_id, expires, sig = _parts(links.token(42, NOW))
    later = str(int(expires) + 365 * 24 * 3600)
    with pytest.raises(RatingLinkError) as refused:
        links.read(f"{handover_id}.{later}.{sig}", NOW)
    assert not refused.value.expired


def test_an_altered_signature_is_refused(links):
    token = links.token(42, NOW)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(RatingLinkError):
        links.read(flipped, NOW)


def test_a_link_signed_with_another_key_is_refused(links):
    forger = RatingLinks(b"a key the attacker chose, 32 bytes!", links.base_url, links.valid_for)
    with pytest.raises(RatingLinkError):
        links.read(forger.token(42, NOW), NOW)
    # Another installation's secret does not do either.
    other = RatingLinks.from_settings(Settings(demo=True, token_secret=secrets.token_urlsafe(32)))
    with pytest.raises(RatingLinkError):
        links.read(other.token(42, NOW), NOW)


def test_the_key_is_not_the_staff_token_key_and_a_staff_token_is_no_link():
    settings = Settings(demo=True)
    assert settings.rating_key() != settings.token_key
    staff_token = security.issue_token(settings.token_key, 1, "admin", NOW, timedelta(hours=1))
    with pytest.raises(RatingLinkError):
        RatingLinks.from_settings(settings).read(staff_token, NOW)


def test_an_expired_link_is_told_apart_from_a_forged_one(links):
    token = links.token(42, NOW)
    assert links.read(token, NOW + timedelta(days=30) - timedelta(seconds=1))
    with pytest.raises(RatingLinkError) as refused:
        links.read(token, NOW + timedelta(days=30))
    assert refused.value.expired


@pytest.mark.parametrize(
    "token",
    [
        "",
        "42",
        "42..",
        "042.1772762400.AAAAAAAAAAAAAAAAAAAAAA",  # a leading zero: another spelling of 42
        "-1.1772762400.AAAAAAAAAAAAAAAAAAAAAA",
        "42.1772762400.AAAAAAAAAAAAAAAAAAAAA",  # 21 characters
        "42.1772762400.AAAAAAAAAAAAAAAAAAAAAAA",  # 23
        "42.1772762400.AAAAAAAAAAAAAAAAAAAA==",
        "42.99999999999999999999.AAAAAAAAAAAAAAAAAAAAAA",
        "42.1772762400.AAAAAAAAAAAAAAAAAAAAAA.extra",
        "４２.1772762400.AAAAAAAAAAAAAAAAAAAAAA",  # full-width digits
        "42.1772762400.AAAAAAAAAAAAAAAAAAAAAA\n",
        "x" * 5000,
        "<script>alert(1)</script>",
    ],
)
def test_malformed_tokens_are_refused(links, token):
    with pytest.raises(RatingLinkError) as refused:
        links.read(token, NOW)
    assert not refused.value.expired


def test_a_huge_expiry_that_verifies_is_still_refused_cleanly():
    """Even a correctly signed token with an absurd expiry (a settings mistake) gives a clear
    refusal, not an overflow."""
    links = RatingLinks(b"k" * 32, "https://r.example.cn/rate", timedelta(days=30))
    payload = "42.999999999999"
    token = f"{payload}.{links._sig(payload)}"
    with pytest.raises(RatingLinkError):
        links.read(token, NOW)


def test_bad_rating_urls_are_refused_at_start():
    for bad in (
        "ftp://r.example/rate",
        "https://r.example/rate?x=1",
        "https:///rate",
        "https://r.example/" + "a" * 80,
        "https://r.example/ra te",
    ):
        with pytest.raises(ValueError):
            Settings(demo=True, rating_url=bad)
    assert Settings(demo=True, rating_url="https://r.example/rate/").rating_url == (
        "https://r.example/rate"
    )
