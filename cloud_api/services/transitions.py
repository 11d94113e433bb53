"""The two state machines of DESIGN.md section 3, one table each.

Every change of state goes through ``check_*``; anything not in the table is an
IllegalTransition (409) that names both states.
"""

from cloud_api.errors import IllegalTransition
from cloud_api.models.handover import HandoverState as H
from cloud_api.models.record import RecordStatus as R

RECORD_TRANSITIONS: dict[R, frozenset[R]] = {
    R.submitted: frozenset({R.prereview_passed, R.rejected, R.withdrawn}),
    # documents_received directly: papers came by post or to a window (drop-off skipped).
    R.prereview_passed: frozenset(
        {R.documents_in_locker, R.documents_received, R.rejected, R.withdrawn}
    ),
    R.documents_in_locker: frozenset({R.documents_received}),
    R.documents_received: frozenset({R.approved, R.rejected, R.withdrawn}),
    # collected directly: the licence was handed over at a window (pickup skipped).
    R.approved: frozenset({R.licence_in_locker, R.collected}),
    # approved again: staff recovered an uncollected licence from the locker.
    R.licence_in_locker: frozenset({R.collected, R.approved}),
    R.collected: frozenset(),
    R.rejected: frozenset(),
    R.withdrawn: frozenset(),
}

#: States only the lockers' handovers may enter or leave; integrators cannot move them.
LOCKER_OWNED_RECORD_STATES = frozenset({R.documents_in_locker, R.licence_in_locker})

HANDOVER_TRANSITIONS: dict[H, frozenset[H]] = {
    H.reserved: frozenset({H.deposited, H.expired, H.cancelled}),
    H.deposited: frozenset({H.collected, H.overdue}),
    # The code keeps working while overdue, so the applicant can still collect.
    H.overdue: frozenset({H.recovered, H.collected}),
    H.collected: frozenset(),
    # deposited after all: the locker reports the item went in while it was off line and
    # never heard of the end (the hardware wins, cloud_api/mqtt/effects.py); nothing else.
    H.expired: frozenset({H.deposited}),
    H.recovered: frozenset(),
    H.cancelled: frozenset({H.deposited}),
}


def check_record(current: str, wanted: str) -> None:
    if R(wanted) not in RECORD_TRANSITIONS[R(current)]:
        raise IllegalTransition("approval record", current, wanted)


def check_record_by_integrator(current: str, wanted: str) -> None:
    if R(wanted) in LOCKER_OWNED_RECORD_STATES or R(current) in LOCKER_OWNED_RECORD_STATES:
        raise IllegalTransition(
            "approval record",
            current,
            wanted,
            f"approval record cannot go from '{current}' to '{wanted}' by API: "
            "the locker moves records into and out of the '*_in_locker' states",
        )
    check_record(current, wanted)


def check_handover(current: str, wanted: str) -> None:
    if H(wanted) not in HANDOVER_TRANSITIONS[H(current)]:
        raise IllegalTransition("handover", current, wanted)


def record_moves_by_api(current: str) -> list[str]:
    """The states an integrator or a staff member may move a record to from ``current``
    (``check_record_by_integrator`` says yes), in the table's order: the dashboard offers
    exactly these buttons, and the route checks the same rule again."""
    if R(current) in LOCKER_OWNED_RECORD_STATES:
        return []
    return [
        wanted.value
        for wanted in R
        if wanted in RECORD_TRANSITIONS[R(current)] and wanted not in LOCKER_OWNED_RECORD_STATES
    ]
