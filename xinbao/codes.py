"""The code scheme shared by the cloud and every locker (DESIGN.md section 6).

Each locker has its own key ``K_l = HMAC-SHA256(master, "xinbao/locker-key/v1|" + locker_id)``.
A code is the HOTP value (RFC 4226, SHA-256) of ``K_l`` at a counter that the cloud allocates per
handover and sends to the locker with the reservation. Cloud and locker therefore compute the
same code without the code itself ever crossing the network or being stored: the SMS body is the
only plaintext. The cloud keeps only ``code_digest`` (a keyed hash) to find a handover by code.

A locker that is off line still checks a typed code against every counter it holds
(``match_counter``), so pickups and pre-synced drop-offs work without the network.

RFC 4226 truncates the HMAC to 31 bits (at most 2,147,483,647), which covers only the codes
0000000000-2147483647 of a 10-digit code space (a fifth of it, and the first digit is never
3-9) and makes a third of 9-digit codes half again as likely as the rest. Codes of 9 and 10
digits therefore take 63 bits from the same offset; 6-8 digit codes stay plain RFC 4226.
"""

import hashlib
import hmac
from collections.abc import Iterable

MIN_DIGITS = 6
MAX_DIGITS = 10
DEFAULT_DIGITS = 8
_KEY_LABEL = b"xinbao/locker-key/v1|"
# Above this many digits 31 bits no longer cover the code space evenly (see the docstring).
_RFC4226_MAX_DIGITS = 8


def derive_locker_key(master_secret: bytes, locker_id: str) -> bytes:
    """The locker's own 32-byte key; leaking it exposes that locker only."""
    if not master_secret:
        raise ValueError("the master secret is empty")
    return hmac.new(master_secret, _KEY_LABEL + locker_id.encode(), hashlib.sha256).digest()


def _check_digits(digits: int) -> None:
    if not MIN_DIGITS <= digits <= MAX_DIGITS:
        raise ValueError(f"code length must be {MIN_DIGITS}-{MAX_DIGITS} digits, not {digits}")


def code_for(locker_key: bytes, counter: int, digits: int = DEFAULT_DIGITS) -> str:
    """The code for one handover counter at one locker."""
    _check_digits(digits)
    if counter < 0:
        raise ValueError("counter must not be negative")
    mac = hmac.new(locker_key, counter.to_bytes(8, "big"), hashlib.sha256).digest()
    offset = mac[-1] & 0x0F  # RFC 4226 5.3 dynamic truncation; offset + 8 <= 23 < 32
    width = 4 if digits <= _RFC4226_MAX_DIGITS else 8
    value = int.from_bytes(mac[offset : offset + width], "big") & ((1 << (8 * width - 1)) - 1)
    return str(value % 10**digits).zfill(digits)


def code_digest(locker_key: bytes, code: str) -> str:
    """Keyed hash of a code: what the database stores and indexes instead of the code."""
    return hmac.new(locker_key, b"xinbao/code/v1|" + code.encode(), hashlib.sha256).hexdigest()


def is_well_formed(code: str, digits: int = DEFAULT_DIGITS) -> bool:
    return len(code) == digits and code.isascii() and code.isdigit()


def match_counter(
    locker_key: bytes, code: str, counters: Iterable[int], digits: int = DEFAULT_DIGITS
) -> int | None:
    """The counter whose code equals ``code``, or None.

    Every candidate is computed and compared in constant time, and the loop never stops early,
    so the time taken says nothing about which counter (if any) matched.
    """
    found = None
    typed = code.encode()
    for counter in counters:
        if hmac.compare_digest(code_for(locker_key, counter, digits).encode(), typed):
            found = counter
    return found
