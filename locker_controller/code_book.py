"""The live codes of this cabinet, as keyed digests in memory, for a fast keypad.

Checking a typed code means comparing it with the code of every live handover. Computing
each HOTP anew for every code typed costs ~0.05 ms per handover (pyotp), several ms for the
~100 live codes a cabinet holds: time on the keypad-to-lock path. So each live handover's
code is turned once into ``code_digest`` (HMAC-SHA256 with the locker key, as the cloud
stores it) and kept in memory only, never on disk; a typed code costs one HMAC and a
constant-time comparison with every digest, never stopping early.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from locker_controller.store import Handover
from xinbao.codes import code_digest, code_for


class CodeBook:
    def __init__(self, locker_key: bytes) -> None:
        self._key = locker_key
        self._digests: dict[tuple[int, int], str] = {}  # (counter, digits) -> digest

    def _digest(self, counter: int, digits: int) -> str:
        found = self._digests.get((counter, digits))
        if found is None:
            found = code_digest(self._key, code_for(self._key, counter, digits))
            self._digests[(counter, digits)] = found
        return found

    def warm(self, handovers: Iterable[Handover]) -> None:
        """Compute the digests of these (live) handovers now, and forget all others."""
        keep = {(h.counter, h.digits) for h in handovers}
        self._digests = {k: v for k, v in self._digests.items() if k in keep}
        for counter, digits in keep:
            self._digest(counter, digits)

    def match(self, code: str, handovers: list[Handover]) -> Handover | None:
        """The handover whose code is ``code``; every candidate is compared."""
        typed = code_digest(self._key, code).encode()
        found = None
        for h in handovers:
            if h.digits == len(code) and hmac.compare_digest(
                self._digest(h.counter, h.digits).encode(), typed
            ):
                found = h
        return found
