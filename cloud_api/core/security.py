"""Passwords, bearer tokens, API keys, locker credentials and TOTP.

Bearer tokens are ``base64url(json payload) "." base64url(HMAC-SHA256)``: the service only
needs to check its own tokens, so a JWT library would add formats and algorithms to get wrong
without adding anything we use.
"""

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyotp
import segno
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cloud_api.errors import AuthError

_hasher = PasswordHasher()
_TOKEN_LABEL = b"xinbao/staff-token/v1|"
TOTP_ISSUER = "Xinbao 信包箱"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A dummy hash to spend the same time on unknown user names as on known ones.
_DUMMY_HASH = _hasher.hash("xinbao-no-such-user")


def burn_password_time(password: str) -> None:
    verify_password(_DUMMY_HASH, password)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class TokenClaims:
    staff_id: int
    role: str
    expires_at: datetime
    # The account's token generation when issued: a token of an older one is refused.
    generation: int = 0
    # Issued after password and TOTP (not a password-only log-in before enrolment).
    mfa: bool = False


def issue_token(
    key: bytes,
    staff_id: int,
    role: str,
    now: datetime,
    ttl: timedelta,
    generation: int = 0,
    mfa: bool = False,
) -> str:
    expires = now + ttl
    claims = {"sub": staff_id, "role": role, "exp": int(expires.timestamp())}
    claims |= {"gen": generation, "mfa": mfa}
    payload = json.dumps(claims, separators=(",", ":")).encode()
    body = _b64(payload)
    sig = hmac.new(key, _TOKEN_LABEL + body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(sig)}"


def read_token(key: bytes, token: str, now: datetime) -> TokenClaims:
    """The claims of a token this service signed and that has not expired; AuthError if not."""
    body, _, sig = token.partition(".")
    if not body or not sig or len(token) > 1000:
        raise AuthError("the bearer token is malformed: log in again")
    expected = hmac.new(key, _TOKEN_LABEL + body.encode(), hashlib.sha256).digest()
    try:
        given = _unb64(sig)
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        raise AuthError("the bearer token is malformed: log in again") from None
    if not hmac.compare_digest(expected, given):
        raise AuthError("the bearer token is not valid: log in again")
    try:
        claims = TokenClaims(
            staff_id=int(payload["sub"]),
            role=str(payload["role"]),
            expires_at=datetime.fromtimestamp(int(payload["exp"]), tz=now.tzinfo),
            generation=int(payload.get("gen", 0)),
            mfa=payload.get("mfa") is True,
        )
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        raise AuthError("the bearer token is malformed: log in again") from None
    if claims.expires_at <= now:
        raise AuthError("the bearer token has expired: log in again")
    return claims


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """Hash of a high-entropy machine secret (API key, locker key): a fast hash is enough,
    as a 256-bit random secret cannot be guessed from its digest; argon2 is for passwords."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_digest: str, secret: str) -> bool:
    return hmac.compare_digest(stored_digest, secret_digest(secret))


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_provisioning(secret: str, username: str) -> tuple[str, str]:
    """The otpauth:// URI and the same as an SVG QR code, for an authenticator app."""
    uri = pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)
    svg = segno.make(uri, error="m").svg_inline(scale=4)
    return uri, svg


TOTP_STEP = timedelta(seconds=30)


def totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step (unix time // 30) whose code ``code`` is, within one step of ``now``
    either side (phone clocks drift); None if it is none of them."""
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    found = None
    for offset in (-1, 0, 1):
        moment = now + offset * TOTP_STEP
        # Every candidate is compared, so the time taken does not tell which one matched.
        if hmac.compare_digest(totp.at(moment), code):
            found = totp.timecode(moment)
    return found


def totp_ok(secret: str, code: str, now: datetime) -> bool:
    return totp_step(secret, code, now) is not None
