"""The kiosk's security headers: its one page runs only its own inline script and style.

The attacks: another page frames the kiosk (a tablet browser left on a hostile page), or
markup smuggled into the page runs a script. The policy allows the page's own inline code by
hash, nothing else; the hashes are checked here against the page itself, and
test_kiosk_browser.py fails on any CSP refusal in chromium.
"""

import base64
import hashlib
import re
from importlib import resources
from types import SimpleNamespace

from fastapi.testclient import TestClient

from locker_controller.config import KioskSettings, MetricsSettings
from locker_controller.kiosk import build_app


def _directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}


def test_kiosk_page_and_api_carry_the_security_headers():
    page_html = resources.files("locker_controller").joinpath("kiosk.html").read_text("utf-8")
    # Only the settings are read to build the app; nothing here reaches the controller.
    config = SimpleNamespace(
        code_digits=8, kiosk=KioskSettings(), reopen_window_s=60.0, metrics=MetricsSettings()
    )
    with TestClient(build_app(SimpleNamespace(config=config))) as client:
        page = client.get("/")
        refused = client.post("/api/code", json={"code": 12})  # 422, before any controller use
    assert page.status_code == 200 and refused.status_code == 422
    for response in (page, refused):
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        csp = _directives(response.headers["content-security-policy"])
        assert csp["frame-ancestors"] == ["'none'"] and csp["default-src"] == ["'self'"]
        assert "'unsafe-inline'" not in response.headers["content-security-policy"]

    csp = _directives(page.headers["content-security-policy"])
    for tag in ("script", "style"):
        inline = re.findall(rf"<{tag}>(.*?)</{tag}>", page_html, re.DOTALL)
        assert inline, f"the kiosk page has no inline {tag} (update this test)"
        wanted = {
            "'sha256-" + base64.b64encode(hashlib.sha256(t.encode()).digest()).decode() + "'"
            for t in inline
        }
        assert set(csp[f"{tag}-src"]) == {"'self'"} | wanted
    # The JSON answers allow no inline code at all.
    assert _directives(refused.headers["content-security-policy"])["script-src"] == ["'self'"]
