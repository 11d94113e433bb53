"""Satisfaction ratings: an applicant rates a collected pickup once; staff read them by site
and week (docs/ratings.md).

``submit`` is one transaction: the rating row and its ``rating.submitted`` audit entry commit
together or not at all. One rating per handover is the database's unique key on
``rating.handover_id``: the look-up first gives the usual answer a clear message, and the key
settles two submits that race (on PostgreSQL the second INSERT waits for the first's commit,
then fails; on SQLite every transaction holds the write lock from its start, core/db.py).

Every refusal is a ``cloud_api.errors`` error whose ``extra`` holds a ``reason`` and the
applicant's message in Chinese and English, for the rating page (web/rating_page.py).
"""

import re
from datetime import UTC, date, datetime, time, timedelta, timezone

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from cloud_api.errors import CloudError, Conflict, InputError, NotFound
from cloud_api.models.handover import Handover, HandoverKind, HandoverState
from cloud_api.models.locker import Locker
from cloud_api.models.rating import (
    COMMENT_MAX,
    SCALE,
    SCORES,
    Rating,
    RatingComment,
    RatingSummary,
    RatingWeek,
    level,
)
from cloud_api.models.record import ApprovalRecord
from cloud_api.services import audit

CHINA_TIME = timezone(timedelta(hours=8), "CST")
AUDIT_ACTION = "rating.submitted"
# Any control character but the line break: a comment may have lines, nothing else invisible
# (and PostgreSQL refuses NUL in text).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")

#: reason -> (Chinese, English): what the applicant reads on the rating page.
MESSAGES: dict[str, tuple[str, str]] = {
    "link_invalid": (
        "此评价链接无效，请使用短信中的完整链接。",
        "This rating link is not valid. Please open the whole link from the SMS.",
    ),
    "link_expired": (
        "此评价链接已过期，感谢您的关注。",
        "This rating link has expired. Thank you all the same.",
    ),
    "not_rateable": (
        "该取件记录不存在或尚未完成，无法评价。",
        "There is no completed pickup for this link, so it cannot be rated.",
    ),
    "already_rated": (
        "您已评价过本次取件，评价提交后不能修改。",
        "You have already rated this pickup. A rating cannot be changed once sent.",
    ),
    "score_missing": (
        "请选择 1 到 5 颗星。",
        "Please choose from 1 to 5 stars.",
    ),
    "comment_too_long": (
        f"留言最多 {COMMENT_MAX} 个字。",
        f"The comment can have at most {COMMENT_MAX} characters.",
    ),
    "comment_control": (
        "留言含有无法显示的字符，请删除后重试。",
        "The comment contains characters that cannot be shown. Please remove them.",
    ),
    "form_too_large": (
        "提交的内容过长。",
        "The form sent is too large.",
    ),
    "form_media_type": (
        "请通过评价页面提交。",
        "Please send your rating from the rating page.",
    ),
    "form_invalid": (
        "提交的内容无法识别，请重新打开短信中的链接。",
        "The form could not be read. Please open the link from the SMS again.",
    ),
}


def _refusal(error: CloudError, reason: str) -> CloudError:
    zh, en = MESSAGES[reason]
    error.extra = {"reason": reason, "message_zh": zh, "message_en": en}
    return error


def refused(reason: str, detail: str) -> CloudError:
    """The error a refusal of this ``reason`` is answered with."""
    kind = {
        "not_rateable": NotFound,
        "already_rated": Conflict,
    }.get(reason, InputError)
    return _refusal(kind(detail), reason)


def check_score(raw: object) -> int:
    text = str(raw).strip() if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    if text not in {str(s) for s in SCORES}:
        raise refused("score_missing", "score must be a whole number from 1 to 5")
    return int(text)


def check_comment(raw: str | None) -> str | None:
    if raw is None:
        return None
    text = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return None
    if len(text) > COMMENT_MAX:
        raise refused("comment_too_long", f"comment must be at most {COMMENT_MAX} characters")
    if _CONTROL.search(text):
        raise refused("comment_control", "comment must not contain control characters")
    return text


def rateable(session: Session, handover_id: int) -> tuple[Handover, ApprovalRecord, Locker]:
    """The collected pickup a link rates, with its record and locker; NotFound otherwise."""
    handover = session.get(Handover, handover_id)
    if (
        handover is None
        or handover.kind != HandoverKind.pickup
        or handover.state != HandoverState.collected
    ):
        raise refused("not_rateable", f"handover {handover_id} is not a collected pickup")
    record = session.get(ApprovalRecord, handover.record_id)
    locker = session.get(Locker, handover.locker_id)
    return handover, record, locker


def existing(session: Session, handover_id: int) -> Rating | None:
    return session.scalar(select(Rating).where(Rating.handover_id == handover_id))


def submit(
    session: Session, handover_id: int, score: int, comment: str | None, now: datetime
) -> Rating:
    """Store the applicant's rating of a collected pickup and audit it (one commit)."""
    handover, record, _ = rateable(session, handover_id)
    if existing(session, handover_id) is not None:
        session.rollback()
        raise refused("already_rated", f"handover {handover_id} has been rated already")
    rating = Rating(
        handover_id=handover.id,
        record_id=record.id,
        locker_id=handover.locker_id,
        score=score,
        scale=SCALE.value,
        comment=comment,
        submitted_at=now,
    )
    session.add(rating)
    try:
        session.flush()
    except IntegrityError:
        # Another submit of the same handover committed first.
        session.rollback()
        raise refused("already_rated", f"handover {handover_id} has been rated already") from None
    audit.append(
        session,
        "applicant",
        AUDIT_ACTION,
        f"handover:{handover.id}",
        {
            "handover_id": handover.id,
            "record_id": record.id,
            "application_no": record.application_number,
            "score": score,
            "scale": SCALE.value,
            "comment": comment,
        },
    )
    session.commit()
    return rating


# --- what staff read ----------------------------------------------------------------------


def week_start(moment: datetime) -> datetime:
    """The start (Monday 00:00 China time, as UTC) of the week ``moment`` falls in."""
    local = moment.astimezone(CHINA_TIME)
    monday = local.date() - timedelta(days=local.weekday())
    return datetime.combine(monday, time(), CHINA_TIME).astimezone(UTC)


def summary(
    session: Session,
    now: datetime,
    weeks: int,
    sites: frozenset[str] | None,
    comments: int,
) -> RatingSummary:
    """Ratings of the last ``weeks`` weeks (this one included) per site and week, and the
    newest comments; ``sites``: only these (None: every site)."""
    starts = [week_start(now) - timedelta(weeks=i) for i in range(weeks)]
    since = starts[-1]
    # Newest week first: the first boundary a rating is not before is its week.
    week = case(*((Rating.submitted_at >= start, i) for i, start in enumerate(starts)))
    where = [Rating.submitted_at >= since]
    if sites is not None:
        where.append(Locker.site.in_(sorted(sites)))
    rows = (
        select(Locker.site.label("site"), week.label("week"), Rating.score.label("score"))
        .join(Locker, Locker.id == Rating.locker_id)
        .where(*where)
        .subquery()
    )
    # Grouped outside: PostgreSQL would not take the CASE with its parameters as the same
    # expression in the SELECT list and in GROUP BY.
    counted = session.execute(
        select(rows.c.site, rows.c.week, rows.c.score, func.count())
        .group_by(rows.c.site, rows.c.week, rows.c.score)
        .order_by(rows.c.week, rows.c.site)
    )
    groups: dict[tuple[int, str], dict[int, int]] = {}
    for site, index, score, count in counted:
        groups.setdefault((index, site), {})[score] = count
    weekly = [
        _week(site, starts[index].astimezone(CHINA_TIME).date(), per_score)
        for (index, site), per_score in sorted(groups.items())
    ]
    latest = session.execute(
        select(Rating, Locker.site, ApprovalRecord.application_number)
        .join(Locker, Locker.id == Rating.locker_id)
        .join(ApprovalRecord, ApprovalRecord.id == Rating.record_id)
        .where(*where, Rating.comment.is_not(None))
        .order_by(Rating.submitted_at.desc(), Rating.id.desc())
        .limit(comments)
    )
    return RatingSummary(
        scale=SCALE.value,
        weeks=weeks,
        since=since,
        sites=None if sites is None else sorted(sites),
        groups=weekly,
        comments=[
            RatingComment(
                id=rating.id,
                site=site,
                locker_id=rating.locker_id,
                handover_id=rating.handover_id,
                application_number=number,
                score=rating.score,
                comment=rating.comment,
                submitted_at=rating.submitted_at,
            )
            for rating, site, number in latest
        ],
    )


def _week(site: str, start: date, per_score: dict[int, int]) -> RatingWeek:
    count = sum(per_score.values())
    levels = {"good": 0, "fair": 0, "poor": 0}
    for score, n in per_score.items():
        levels[level(score)] += n
    return RatingWeek(
        site=site,
        week_start=start,
        count=count,
        average=round(sum(s * n for s, n in per_score.items()) / count, 2),
        distribution={str(s): per_score.get(s, 0) for s in SCORES},
        levels=levels,
    )
