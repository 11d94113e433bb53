"""Staff passes: what a staff member types at one cabinet's kiosk, with their staff number.

A cabinet never holds a staff member's TOTP secret (it is the dashboard's second factor, and a
stolen cabinet would give it away). Instead, after a full dashboard log-in (password + TOTP)
the cloud issues a pass for one cabinet and one shift:

    pass_key = HMAC-SHA256(K_l, "xinbao/staff-pass-key/v1")   (K_l: codes.derive_locker_key)
    mac      = HMAC-SHA256(pass_key, "xinbao/staff-pass/v1|" locker_id "|" staff_no "|"
                                      window "|" counter)
    pass     = first 8 bytes of mac as an unsigned integer, mod 10**10, as 10 digits

``window`` is the 12-hour window (unix time // 43200) the pass was issued in; a cabinet takes a
pass in that window and the next one (so a pass lasts 12 to 24 hours), and one window ahead for
a cabinet clock running late. ``counter`` numbers the passes of one staff member; the cloud
sends each cabinet a floor per member, and a cabinet takes counters from the floor up to
``COUNTER_SPAN`` above it, so raising the floor (a TOTP reset, a deactivation) ends every pass
issued before.

The cabinet verifies a pass with the key it already holds to check applicants' codes, so off
line staff log-in keeps working once a pass is issued, and a stolen cabinet yields only its
own key: a pass (or a key) of XA-0001 is worth nothing at XA-0002 or at the dashboard.
"""

import hashlib
import hmac
from collections.abc import Iterable

PASS_DIGITS = 10
WINDOW_SECONDS = 12 * 3600
COUNTER_SPAN = 16
_KEY_LABEL = b"xinbao/staff-pass-key/v1"
_PASS_LABEL = "xinbao/staff-pass/v1"


def derive_pass_key(locker_key: bytes) -> bytes:
    if not locker_key:
        raise ValueError("the locker key is empty")
    return hmac.new(locker_key, _KEY_LABEL, hashlib.sha256).digest()


def window_of(unix_time: float) -> int:
    return int(unix_time // WINDOW_SECONDS)


def window_end(window: int) -> int:
    """Unix time after which a pass issued in ``window`` is refused (a right clock assumed)."""
    return (window + 2) * WINDOW_SECONDS


def pass_for(pass_key: bytes, locker_id: str, staff_no: str, window: int, counter: int) -> str:
    if window < 0 or counter < 0:
        raise ValueError("window and counter must not be negative")
    message = f"{_PASS_LABEL}|{locker_id}|{staff_no}|{window}|{counter}".encode()
    mac = hmac.new(pass_key, message, hashlib.sha256).digest()
    return str(int.from_bytes(mac[:8], "big") % 10**PASS_DIGITS).zfill(PASS_DIGITS)


def is_well_formed(text: str) -> bool:
    return len(text) == PASS_DIGITS and text.isascii() and text.isdigit()


def match_pass(
    pass_key: bytes,
    locker_id: str,
    staff_no: str,
    typed: str,
    now: float,
    counters: Iterable[int],
) -> bool:
    """Whether ``typed`` is a pass of this staff member at this cabinet, issued in this window,
    the one before or (a cabinet clock running late) the one after, at one of ``counters``.
    Every candidate is compared, so the time taken does not tell which one matched."""
    if not is_well_formed(typed):
        return False
    current = window_of(now)
    found = False
    for counter in counters:
        for window in (current - 1, current, current + 1):
            if window < 0:
                continue
            expected = pass_for(pass_key, locker_id, staff_no, window, counter)
            found |= hmac.compare_digest(expected, typed)
    return found
