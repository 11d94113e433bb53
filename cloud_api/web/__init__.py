"""The staff dashboard: static pages served by the API process itself, and the JSON views
they need that the API lacks; and the applicants' rating page.

``mount_web(app)`` adds ``/`` (redirects to ``/dashboard/``), ``/dashboard/...`` (plain
HTML/CSS/JS shipped inside the package, read through importlib.resources: no build step,
nothing fetched from the internet), ``/api/v1/dashboard/...`` (``web.routes``: records with
their handovers, notices, the alarm summary, the latest audit entries, ratings; the staff
record routes read through ``web.records`` too) and ``/rate/{token}`` (the 满意度评价 page
the thank-you SMS links to, web/rating_page.py).
"""

from fastapi import FastAPI

from cloud_api.web import rating_page, ratings, routes
from cloud_api.web.pages import mount_pages


def mount_web(app: FastAPI) -> None:
    app.include_router(routes.router)
    app.include_router(ratings.router)
    app.include_router(rating_page.router)
    mount_pages(app)


__all__ = ["mount_web"]
