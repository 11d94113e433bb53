"""Staff lists follow changes to on-line lockers, not only reconnects.

A staff member created, enrolled (TOTP confirmed), deactivated, moved to another site or whose
passes were voided after a locker came on line must be able (or no longer able) to log in at
it. Each site's lockers get their own list (the members whose role and site cover it). The
staff routes know nothing of MQTT, so the bridge looks instead: every few seconds it computes
a digest of each site's list and asks the database, in one query per site with on-line
lockers, which of them were last given another one (so a round where nothing changed loads no
command rows, however many lockers a site has). The digest sent is noted
on the ``staff_credentials`` command row itself (``result.digest``; the locker's reply is
merged in beside it), so the database says what each locker was given, whichever process
sent it.

Deciding and recording happen under the locker's ``locker_link`` row lock, so two API
processes never push the same change twice.
"""

import hashlib
from collections.abc import Callable

from sqlalchemy import Engine, func, not_, or_, select
from sqlmodel import Session

from cloud_api.models.locker import Locker
from cloud_api.models.monitoring import LockerCommand, LockerLink
from cloud_api.mqtt import commands
from xinbao.contract import Command, CommandType, StaffCredentials

DIGEST_KEY = "digest"


def digest(staff: StaffCredentials) -> str:
    return hashlib.sha256(staff.to_bytes()).hexdigest()


# A list counts as given unless it never left (failed, "not sent: ..."): one that went
# unanswered is not sent again and again to a locker that does not answer (it gets the list
# with the full sync when it next comes on line), and one the locker refused shows up on the
# commands page instead of being repeated every round.
_NOT_SENT = "not sent%"


def last_pushed(session: Session, locker_id: str) -> str | None:
    """The digest of the newest staff list sent to this locker that did not fail."""
    found = session.scalar(
        select(LockerCommand)
        .where(
            LockerCommand.locker_id == locker_id,
            LockerCommand.type == CommandType.STAFF_CREDENTIALS.value,
            _pushed(),
        )
        .order_by(LockerCommand.id.desc())
        .limit(1)
    )
    return _digest_of(found)


def _pushed():
    error = func.coalesce(LockerCommand.error, "")
    return or_(LockerCommand.status != "failed", not_(error.like(_NOT_SENT)))


def _digest_of(command: LockerCommand | None) -> str | None:
    if command is None or not isinstance(command.result, dict):
        return None
    return command.result.get(DIGEST_KEY)


def out_of_date(session: Session, site: str, current: str) -> list[str]:
    """The on-line lockers of ``site`` whose newest staff list (not failed) is not
    ``current``: one query that compares the digests in the database, so the usual answer
    (none) costs no rows."""
    newest = (
        select(LockerCommand.locker_id, func.max(LockerCommand.id).label("id"))
        .where(LockerCommand.type == CommandType.STAFF_CREDENTIALS.value, _pushed())
        .group_by(LockerCommand.locker_id)
        .subquery()
    )
    given = LockerCommand.result[DIGEST_KEY].as_string()
    return list(
        session.scalars(
            select(LockerLink.locker_id)
            .join(Locker, Locker.id == LockerLink.locker_id)
            .outerjoin(newest, newest.c.locker_id == LockerLink.locker_id)
            .outerjoin(LockerCommand, LockerCommand.id == newest.c.id)
            .where(
                LockerLink.online.is_(True),
                Locker.site == site,
                or_(given.is_(None), given != current),
            )
            .order_by(LockerLink.locker_id)
        )
    )


def push_changed(
    engine: Engine,
    prepare: Callable[[Session, str, StaffCredentials, dict], Command],
    publish: Callable[[str, Command], None],
) -> list[str]:
    """Send its site's current list to every on-line locker that has an older one; their
    ids."""
    stale: list[tuple[str, StaffCredentials, str]] = []
    with Session(engine, expire_on_commit=False) as session:
        sites = session.scalars(
            select(Locker.site)
            .join(LockerLink, LockerLink.locker_id == Locker.id)
            .where(LockerLink.online.is_(True))
            .distinct()
            .order_by(Locker.site)
        ).all()
        for site in sites:
            staff = commands.staff_payload(session, site)
            current = digest(staff)
            stale += [(lid, staff, current) for lid in out_of_date(session, site, current)]
        session.commit()
    stale.sort(key=lambda found: found[0])
    pushed = []
    # One cheap read per site; the row lock only for the few that look out of date.
    for locker_id, staff, current in stale:
        command = None
        with Session(engine, expire_on_commit=False) as session:
            link = session.get(LockerLink, locker_id, with_for_update=True)
            if link is not None and link.online and last_pushed(session, locker_id) != current:
                command = prepare(session, locker_id, staff, {DIGEST_KEY: current})
            session.commit()
        if command is not None:
            publish(locker_id, command)
            pushed.append(locker_id)
    return pushed


def merge_reply(stored: dict | None, reply: dict | None) -> dict | None:
    """What the locker answered, keeping the digest the cloud noted when it sent the list."""
    if not isinstance(stored, dict) or DIGEST_KEY not in stored:
        return reply
    return {**(reply or {}), DIGEST_KEY: stored[DIGEST_KEY]}
