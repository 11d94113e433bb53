"""The staff dashboard: static pages served by the API process itself, and the one JSON view
they need that the API lacks (records with their handovers).

``mount_web(app)`` adds ``/`` (redirects to ``/dashboard/``), ``/dashboard/...`` (plain
HTML/CSS/JS shipped inside the package, read through importlib.resources: no build step,
nothing fetched from the internet) and ``GET /api/v1/dashboard/records``.
"""

from fastapi import FastAPI

from cloud_api.web import routes
from cloud_api.web.pages import mount_pages


def mount_web(app: FastAPI) -> None:
    app.include_router(routes.router)
    mount_pages(app)


__all__ = ["mount_web"]
