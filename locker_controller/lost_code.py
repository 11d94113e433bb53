"""Forgot my code (忘记开箱码): the kiosk forwards the applicant's request to the cloud.

The applicant types the application number and the last 4 digits of the mobile. What goes
out is a ``code_reissue_requested`` event (xinbao/lost_code.py: the digits only as a digest
keyed with this locker's key); the cloud sends a new code by SMS if they match a live
handover here. The answer at the kiosk is the same whether or not anything matched, so the
kiosk tells no one which application numbers exist. Only a request that cannot go anywhere is
answered differently: malformed input, and a cabinet that cannot reach the cloud now (the
request would wait in the outbox while the applicant walks away).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from locker_controller.config import ControllerConfig
from locker_controller.errors import CodeRefused
from locker_controller.outbox import EventLog
from xinbao import lost_code
from xinbao.contract import EventType

log = logging.getLogger(__name__)

_HOUR_S = 3600.0


class LostCodeDesk:
    def __init__(
        self,
        config: ControllerConfig,
        events: EventLog,
        cloud_reachable: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = config.locker_key
        self._events = events
        self._reachable = cloud_reachable
        self._clock = clock
        self.per_hour = config.lost_code_per_hour
        self._sent: deque[float] = deque()
        self.dropped = 0  # requests over the hourly cap, answered but not forwarded

    def request(self, application_no: object, mobile_last4: object) -> bool:
        """Forward one request; True when it went to the outbox, False when the hourly cap
        kept it back (the kiosk answers the same). CodeRefused ``malformed_application_no`` /
        ``malformed_mobile`` for bad input, ``offline`` when the cloud is out of reach."""
        try:
            data = lost_code.request_data(self._key, application_no, mobile_last4)
        except lost_code.BadRequest as err:
            reason = (
                "malformed_mobile" if err.field == "mobile_last4" else "malformed_application_no"
            )
            raise CodeRefused(reason, str(err)) from None
        if not self._reachable():
            raise CodeRefused("offline", "the cloud is out of reach")
        now = self._clock()
        while self._sent and now - self._sent[0] >= _HOUR_S:
            self._sent.popleft()
        if len(self._sent) >= self.per_hour:
            self.dropped += 1
            log.warning(
                "lost-code request not forwarded: %d this hour already (%d kept back in all)",
                len(self._sent),
                self.dropped,
            )
            return False
        self._sent.append(now)
        self._events.record(EventType.CODE_REISSUE_REQUESTED, None, **data)
        return True
