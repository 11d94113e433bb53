"""``GET /api/v1/dashboard/ratings``: applicants' ratings per site and week, and the newest
comments, for the dashboard's 满意度 Ratings page.

How the public rates the service is for those answerable for a site: administrators (every
site) and supervisors (their site, or every site when they have none). Staff and technicians
get 403, as does a supervisor asking for another site.
"""

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_api.api.deps import CurrentStaff, NowDep, SessionDep
from cloud_api.api.problems import problem_responses
from cloud_api.errors import Forbidden
from cloud_api.models.rating import RatingSummary
from cloud_api.models.staff import Role, Staff
from cloud_api.services import ratings
from cloud_api.services.staff import SITE_AUTHORITY, covers

router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])
SiteQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="one site"),
]


def _sites(staff: Staff, site: str | None) -> frozenset[str] | None:
    if staff.role not in SITE_AUTHORITY:
        raise Forbidden("ratings are for supervisors and administrators")
    if site is not None:
        if not covers(staff, site):
            raise Forbidden(f"site {site!r} is not yours: you cover {staff.site!r}")
        return frozenset({site})
    if staff.role == Role.admin or staff.site is None:
        return None
    return frozenset({staff.site})


@router.get("/ratings", response_model=RatingSummary, responses=problem_responses(403))
def rating_summary(
    staff: CurrentStaff,
    session: SessionDep,
    now: NowDep,
    weeks: Annotated[int, Query(ge=1, le=26)] = 8,
    site: SiteQuery = None,
    comments: Annotated[int, Query(ge=0, le=100)] = 20,
):
    """Ratings of the last ``weeks`` weeks (weeks start on Monday, China time) per site and
    week: count, average, the count of each score (1-5 stars) and of 好/中/差 (4-5, 3, 1-2);
    and the newest ``comments`` comments."""
    return ratings.summary(session, now, weeks, _sites(staff, site), comments)
