"""Telling a locker about a handover the request just changed (after the commit).

A failure here never fails the request: the change is committed, and the locker receives a
full sync when it next comes on line (presence ``online``), which covers anything missed.
"""

import logging
from typing import Annotated

from fastapi import Depends, Request

from cloud_api.models.handover import Handover
from cloud_api.mqtt import CloudBridge
from cloud_api.mqtt.errors import LinkDown

log = logging.getLogger(__name__)


def get_bridge(request: Request) -> CloudBridge | None:
    return getattr(request.app.state, "bridge", None)


BridgeDep = Annotated[CloudBridge | None, Depends(get_bridge)]


def sync_handover(bridge: CloudBridge | None, handover: Handover) -> None:
    if bridge is None:
        return
    try:
        bridge.sync_handovers(handover.locker_id, [handover.id])
    except LinkDown as err:
        log.warning("handover %s not synced to %s now: %s", handover.id, handover.locker_id, err)
