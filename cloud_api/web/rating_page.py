"""The applicant's rating page (满意度评价), behind the link in the thank-you SMS.

``GET /rate/{token}`` shows a form (1-5 stars, an optional comment) for the collected pickup
the signed token names (core/rating_links.py), or the rating already given; ``POST`` stores
it (services/ratings.py) and sends the browser back to the page (303), which then thanks.
Plain HTML with a form POST and one stylesheet from this server: no script, nothing from the
internet, so it works on any phone and with the site off line from the world. Every value
shown is escaped here; the CSP (xinbao/security_headers.py) would stop a script anyway.

Answers: 200 the page, 303 after a rating, 404 a link that is not ours (malformed, forged,
altered) or no collected pickup, 410 a genuine link past its expiry, 409 a second rating,
413/415/422 a form that cannot be taken; each a bilingual page, and none changes anything.
"""

import html
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cloud_api.api.deps import NowDep, PolicyDep, SessionDep
from cloud_api.core.rating_links import RatingLinkError
from cloud_api.errors import CloudError
from cloud_api.models.rating import COMMENT_MAX, Rating
from cloud_api.services import ratings

router = APIRouter(prefix="/rate", include_in_schema=False)

CHINA_TIME = timezone(timedelta(hours=8), "CST")
_FORM_MAX_BYTES = 16 * 1024  # a 500-character comment percent-encoded is under 5 KB
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
SCORE_WORDS = {
    5: ("非常满意", "Very good"),
    4: ("满意", "Good"),
    3: ("一般", "Fair"),
    2: ("不满意", "Poor"),
    1: ("很不满意", "Very poor"),
}
_STATUS = {
    "link_invalid": 404,
    "not_rateable": 404,
    "link_expired": 410,
    "already_rated": 409,
    "form_too_large": 413,
    "form_media_type": 415,
}
_NO_STORE = {"Cache-Control": "no-store"}
_CSS = resources.files("cloud_api.web").joinpath("rating.css").read_text(encoding="utf-8")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _when(moment: datetime | None) -> tuple[str, str]:
    if moment is None:
        return "—", "—"
    local = moment.astimezone(CHINA_TIME)
    return (
        f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}",
        f"{local.day} {_MONTHS[local.month - 1]} {local.year}, {local:%H:%M}",
    )


def _page(body: str, status: int = 200, title: str = "满意度评价 Rate our service") -> HTMLResponse:
    document = f"""<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{_e(title)}</title>
<link rel="stylesheet" href="rating.css">
</head>
<body>
<main class="sheet">
<header class="brand">信包箱 <span lang="en">Xinbao</span></header>
{body}
</main>
</body>
</html>
"""
    return HTMLResponse(document, status_code=status, headers=_NO_STORE)


def _notice(reason: str, status: int | None = None) -> HTMLResponse:
    zh, en = ratings.MESSAGES.get(reason, ratings.MESSAGES["form_invalid"])
    status = status or _STATUS.get(reason, 422)
    body = f"""<section class="card notice" data-reason="{_e(reason)}">
<h1>满意度评价 <span lang="en">Rate our service</span></h1>
<p class="message" role="alert">{_e(zh)}</p>
<p class="message en" lang="en">{_e(en)}</p>
</section>"""
    return _page(body, status)


def _stars(score: int) -> str:
    return "★" * score + "☆" * (5 - score)


def _about(site: str, collected: datetime | None) -> str:
    zh, en = _when(collected)
    return f"""<dl class="about">
<dt>取件地点 <span lang="en">Collected at</span></dt><dd>{_e(site)}</dd>
<dt>取件时间 <span lang="en">Collected on</span></dt>
<dd>{_e(zh)} <span lang="en">{_e(en)}</span></dd>
</dl>"""


def _thanks(rating: Rating, site: str, collected: datetime | None) -> HTMLResponse:
    zh, en = SCORE_WORDS[rating.score]
    comment = (
        f'<blockquote class="comment" id="rated-comment">{_e(rating.comment)}</blockquote>'
        if rating.comment
        else ""
    )
    body = f"""<section class="card thanks" id="rated" data-score="{rating.score}">
<h1>感谢您的评价 <span lang="en">Thank you for your rating</span></h1>
{_about(site, collected)}
<p class="given"><span class="stars" aria-hidden="true">{_stars(rating.score)}</span>
{_e(zh)} <span lang="en">{_e(en)}</span></p>
{comment}
<p class="small">评价已提交，不能修改。
<span lang="en">A rating cannot be changed once sent.</span></p>
</section>"""
    return _page(body)


def _choice(score: int, checked: bool) -> str:
    zh, en = SCORE_WORDS[score]
    return (
        f'<input type="radio" name="score" id="score-{score}" value="{score}"'
        f"{' checked' if checked else ''} required>\n"
        f'<label for="score-{score}" title="{_e(zh)} {_e(en)}">'
        f'<span class="star" aria-hidden="true">★</span>'
        f'<span class="word">{score} · {_e(zh)}<br><span lang="en">{_e(en)}</span></span>'
        "</label>"
    )


def _form(
    site: str,
    collected: datetime | None,
    error: str | None = None,
    score: int | None = None,
    comment: str = "",
) -> HTMLResponse:
    # 5 down to 1 in the page: the stylesheet reverses the row (rating.css says why).
    choices = "\n".join(_choice(s, s == score) for s in SCORE_WORDS)
    alert = ""
    if error is not None:
        zh, en = ratings.MESSAGES[error]
        alert = (
            f'<p class="error" role="alert" id="rating-error" data-reason="{_e(error)}">'
            f'{_e(zh)}<br><span lang="en">{_e(en)}</span></p>'
        )
    body = f"""<section class="card">
<h1>满意度评价 <span lang="en">Rate our service</span></h1>
<p class="lead">您对本次取件服务满意吗？<span lang="en">How was your pickup?</span></p>
{_about(site, collected)}
<form method="post" id="rating-form" accept-charset="utf-8">
{alert}
<fieldset class="scale">
<legend>评分 <span lang="en">Your rating</span> (1–5 ★)</legend>
<div class="stars-input">
{choices}
</div>
</fieldset>
<label class="comment-label" for="comment">留言（可选）
<span lang="en">Comment (optional)</span></label>
<textarea id="comment" name="comment" maxlength="{COMMENT_MAX}" rows="4"
 placeholder="最多 {COMMENT_MAX} 字 · up to {COMMENT_MAX} characters">{_e(comment)}</textarea>
<button type="submit" id="rating-submit">提交评价 <span lang="en">Send rating</span></button>
<p class="small">每次取件只能评价一次。<span lang="en">Each pickup can be rated once.</span></p>
</form>
</section>"""
    return _page(body, 422 if error is not None else 200)


def _reason(error: CloudError) -> str:
    return (getattr(error, "extra", None) or {}).get("reason", "form_invalid")


async def read_form(request: Request) -> dict[str, str] | str:
    """The posted fields, or the reason the form cannot be taken (the page says it)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        return "form_media_type"
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > _FORM_MAX_BYTES):
        return "form_too_large"
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_MAX_BYTES:
            return "form_too_large"
    try:
        fields = parse_qs(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=10,
        )
    except (UnicodeDecodeError, ValueError):
        return "form_invalid"
    if any(len(values) != 1 for values in fields.values()):
        return "form_invalid"  # a field given twice: which one would count?
    return {name: values[0] for name, values in fields.items()}


FormDep = Annotated[dict[str, str] | str, Depends(read_form)]


@router.get("/rating.css")
def stylesheet() -> Response:
    return Response(_CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


def _open(token: str, session, policy, now):
    """The handover and locker a link rates, or the page that says why it cannot."""
    try:
        ticket = policy.rating_links.read(token, now)
        handover, _, locker = ratings.rateable(session, ticket.handover_id)
    except RatingLinkError as err:
        return _notice("link_expired" if err.expired else "link_invalid")
    except CloudError as err:
        return _notice(_reason(err))
    return handover, locker


# {token:path}: a mangled link with a slash in it gets the same clear page, not the API's 404.
@router.get("/{token:path}", response_class=HTMLResponse)
def rating_page(token: str, session: SessionDep, policy: PolicyDep, now: NowDep):
    opened = _open(token, session, policy, now)
    if isinstance(opened, Response):
        return opened
    handover, locker = opened
    given = ratings.existing(session, handover.id)
    if given is not None:
        return _thanks(given, locker.site, handover.finished_at)
    return _form(locker.site, handover.finished_at)


@router.post("/{token:path}", response_class=HTMLResponse)
def submit_rating(token: str, form: FormDep, session: SessionDep, policy: PolicyDep, now: NowDep):
    opened = _open(token, session, policy, now)
    if isinstance(opened, Response):
        return opened
    handover, locker = opened
    if isinstance(form, str):
        return _notice(form)
    comment = form.get("comment", "")
    try:
        score = ratings.check_score(form.get("score", ""))
        checked = ratings.check_comment(comment)
        ratings.submit(session, handover.id, score, checked, now)
    except CloudError as err:
        reason = _reason(err)
        if reason in ("score_missing", "comment_too_long", "comment_control"):
            # The form again, with what was typed (escaped) and what to fix.
            raw = form.get("score", "")
            kept = int(raw) if raw in {"1", "2", "3", "4", "5"} else None
            return _form(locker.site, handover.finished_at, reason, kept, comment[:COMMENT_MAX])
        return _notice(reason)
    # Back to the page, which now shows the rating: a reload does not post again.
    return RedirectResponse(token, status_code=303, headers=_NO_STORE)
