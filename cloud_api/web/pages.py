"""Serve the dashboard's static files from the package (importlib.resources)."""

from importlib import resources
from pathlib import PurePosixPath

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import Scope

STATIC_PACKAGE = "cloud_api.web.static"
# The static directory is a Python package (so wheels ship it): never serve its .py files.
SERVED_SUFFIXES = frozenset({"", ".html", ".css", ".js", ".svg", ".png", ".ico"})


class DashboardFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope):
        if PurePosixPath(path).suffix not in SERVED_SUFFIXES or "__pycache__" in path:
            raise HTTPException(status_code=404)
        return await super().get_response(path, scope)


def mount_pages(app: FastAPI) -> None:
    # An installed wheel is a plain directory, so StaticFiles can serve it from there
    # (html=True answers /dashboard/ with index.html).
    static_dir = resources.files(STATIC_PACKAGE)

    @app.get("/", include_in_schema=False)
    def _root() -> RedirectResponse:
        return RedirectResponse("/dashboard/", status_code=307)

    app.mount("/dashboard", DashboardFiles(directory=str(static_dir), html=True), name="dashboard")
