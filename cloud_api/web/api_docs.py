"""``/docs``: Swagger UI served from this process, never from a CDN.

FastAPI's own page loads Swagger UI from cdn.jsdelivr.net: a staff browser would run
whatever that CDN serves next to a logged-in session, and the page is blank without the
internet. The assets come from the ``fastapi-offline`` package (Swagger UI 5, which reads
OpenAPI 3.1) and are served at ``/docs/assets/``; the page itself has no inline code, so the
same Content-Security-Policy as every other page holds (xinbao/security_headers.py).
"""

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{title}} · API docs</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" href="{ASSETS}/favicon.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the schema to validator.swagger.io.
_INIT = """window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
});
"""


def mount_docs(app: FastAPI) -> None:
    """Needs ``FastAPI(docs_url=None, redoc_url=None)``: those are the CDN pages."""
    page = _PAGE.replace("{title}", app.title)
    assets = resources.files("fastapi_offline") / "static"

    @app.get("/docs", include_in_schema=False)
    def swagger_page() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/init.js", include_in_schema=False)
    def swagger_init() -> Response:
        return Response(_INIT, media_type="text/javascript")

    app.mount(ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")
