"""The testers' web panel: static HTML, CSS and JS that the control server hands out.

The page does everything through the control server's JSON API, so the API stays the one
place where rules live. Assets are read through ``importlib.resources`` (they ship as
package data) and only by a bare file name from the fixed set below: a request path never
becomes a file-system path, so no ``..`` or encoded slash can reach another file.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from importlib import resources
from typing import Any

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}
_ASSET_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,40}\.(html|css|js)$")
_DOORS_MARK = "<!--DOORS-->"


class AssetNotFound(LookupError):
    """No panel file by that name."""


def asset(name: str) -> tuple[bytes, str]:
    """The bytes and content type of one panel file, by bare name (``panel.js``)."""
    if not _ASSET_NAME.match(name):
        raise AssetNotFound(name)
    ref = resources.files(__name__).joinpath(name)
    if not ref.is_file():
        raise AssetNotFound(name)
    return ref.read_bytes(), CONTENT_TYPES[name[name.rindex(".") :]]


def index_page(sims: Iterable[Any]) -> str:
    """The panel page, with a plain table of the doors for browsers without JavaScript."""
    page, _ = asset("index.html")
    return page.decode("utf-8").replace(_DOORS_MARK, _door_table(sims), 1)


def _door_table(sims: Iterable[Any]) -> str:
    rows = []
    for sim in sims:
        for board in sim.boards:
            for state in board.states():
                door = "open" if state.door_open else ("locked" if state.locked else "shut")
                rows.append(
                    f"<tr><td>{html.escape(sim.name)}</td><td>{board.address}</td>"
                    f"<td>{state.channel}</td><td>{door}</td><td>{state.items}</td></tr>"
                )
    return (
        "<table><tr><th>bus</th><th>board</th><th>channel</th><th>door</th><th>items</th></tr>"
        + "".join(rows)
        + "</table>"
    )
