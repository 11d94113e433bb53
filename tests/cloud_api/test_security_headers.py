"""Security headers on every answer of the cloud, and /docs without a CDN.

The attacks: a page of another site frames the dashboard to trick a click (remote open); a
script injected into a page runs or sends data away; a JSON answer is sniffed as HTML; the
docs page pulls its script from cdn.jsdelivr.net into the staff's logged-in browser.
"""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from cloud_api.main import create_app
from tests.support.browser import launch_chromium, screenshot, serve, stop_serving

# Every kind of answer: pages, static files, JSON, problem documents, errors of each layer.
ANSWERS = [
    ("GET", "/", None),
    ("GET", "/dashboard/", None),
    ("GET", "/dashboard/app.js", None),
    ("GET", "/dashboard/no-such.js", None),
    ("GET", "/docs", None),
    ("GET", "/docs/init.js", None),
    ("GET", "/docs/assets/swagger-ui-bundle.js", None),
    ("GET", "/openapi.json", None),
    ("GET", "/api/v1/lockers", None),  # 401 problem
    ("GET", "/api/v1/no-such-route", None),  # 404
    ("POST", "/api/v1/staff/login", {"username": 1}),  # 422
    ("POST", "/api/v1/staff/login", {"username": "nobody", "password": "x"}),  # 401
    ("DELETE", "/api/v1/lockers", None),  # 405
]


def _check_headers(response) -> None:
    h = response.headers
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    csp = h["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval, no CDN
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"


@pytest.mark.parametrize(("method", "path", "body"), ANSWERS)
def test_every_answer_carries_the_security_headers(client, method, path, body):
    response = client.request(method, path, json=body, follow_redirects=False)
    assert response.status_code < 500, response.text
    _check_headers(response)


def test_docs_page_loads_nothing_from_another_origin(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    assert "<script>" not in page.text and "cdn" not in page.text
    for source in sources:
        assert client.get(source).status_code == 200, source
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page is a CDN page too


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch_chromium() as browser:
        yield browser


@pytest.mark.slow
@pytest.mark.browser
def test_docs_render_in_chromium_with_no_request_elsewhere(browser, settings, console):
    app = create_app(settings, sms_provider=console)
    server, thread, base = serve(app)
    context = browser.new_context()
    try:
        page = context.new_page()
        foreign, refused, errors = [], [], []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on(
            "console",
            lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None,
        )

        def route(r):
            if not r.request.url.startswith(base):
                foreign.append(r.request.url)
                r.abort()
            else:
                r.continue_()

        page.route("**/*", route)
        page.goto(f"{base}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Xinbao cloud API")
        expect(page.locator(".opblock-tag").first).to_be_visible()
        screenshot(page, "api-docs")
        assert foreign == [] and refused == [] and errors == [], (foreign, refused, errors)
    finally:
        context.close()
        stop_serving(server, thread)
