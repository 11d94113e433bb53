"""Signed rating links: the thank-you SMS's 满意度评价 link, one per collected pickup.

A token is ``{handover_id}.{expires}.{sig}``: ``expires`` in unix seconds, ``sig`` the first
16 bytes (128 bits) of HMAC-SHA256 over a label and the first two parts, base64url. It is
short on purpose: it travels in an SMS of at most three parts. Nothing is stored for it: the
signature says the cloud issued the link for that handover and that expiry, so an altered id
or a later expiry fails the signature, and the one-rating-per-handover rule
(services/ratings.py) is what stops reuse. The key is ``Settings.rating_key()``, derived from
the token secret with its own label.

A refused token is either not valid (malformed, forged, altered) or expired, which the page
tells apart: only a link that was really ours may be told "expired".
"""

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloud_api.core.config import Settings

_LABEL = b"xinbao/rating-link/v1|"
_SIG_BYTES = 16
# Strict: decimal numbers without leading zeros (one token per link, not several spellings),
# and exactly the signature's length. Anything else is refused before any HMAC is computed.
_TOKEN = re.compile(r"^([1-9][0-9]{0,9})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{22})$")
TOKEN_MAX = 64


class RatingLinkError(Exception):
    """A token that opens nothing: ``expired`` says whether it was a genuine one, too late."""

    def __init__(self, detail: str, *, expired: bool = False) -> None:
        super().__init__(detail)
        self.expired = expired


@dataclass(frozen=True)
class RatingTicket:
    handover_id: int
    expires_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class RatingLinks:
    key: bytes
    base_url: str
    valid_for: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> "RatingLinks":
        return cls(
            settings.rating_key(),
            settings.rating_url,
            timedelta(days=settings.rating_valid_days),
        )

    def _sig(self, payload: str) -> str:
        digest = hmac.new(self.key, _LABEL + payload.encode(), hashlib.sha256).digest()
        return _b64(digest[:_SIG_BYTES])

    def token(self, handover_id: int, collected_at: datetime) -> str:
        expires = int((collected_at + self.valid_for).timestamp())
        payload = f"{handover_id}.{expires}"
        return f"{payload}.{self._sig(payload)}"

    def link(self, handover_id: int, collected_at: datetime) -> str:
        return f"{self.base_url}/{self.token(handover_id, collected_at)}"

    def read(self, token: str, now: datetime) -> RatingTicket:
        """The handover a token rates, if this service signed it and it has not expired."""
        match = _TOKEN.match(token) if len(token) <= TOKEN_MAX else None
        if match is None:
            raise RatingLinkError("the rating link is malformed")
        handover_id, expires, sig = match.groups()
        expected = self._sig(f"{handover_id}.{expires}")
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise RatingLinkError("the rating link's signature does not match")
        try:
            expires_at = datetime.fromtimestamp(int(expires), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise RatingLinkError("the rating link's expiry is out of range") from None
        if expires_at <= now:
            raise RatingLinkError("the rating link has expired", expired=True)
        return RatingTicket(int(handover_id), expires_at)
