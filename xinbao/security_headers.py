"""Security headers on every response of the cloud API and of a cabinet's kiosk.

- ``Content-Security-Policy``: scripts, styles, images and requests from this origin only, so
  markup that slips into a page (an applicant's name rendered wrongly one day) cannot run a
  script or send data elsewhere; ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``
  stop another site from framing the dashboard or kiosk to trick clicks (remote opens!).
- ``X-Content-Type-Options: nosniff``: a JSON answer is never run as a script.
- ``Referrer-Policy: no-referrer``: URLs (with handover references) do not leak in Referer.

A page whose scripts and styles are inline (the kiosk is one self-contained file, so it
works with nothing else served) gets their SHA-256 hashes in the policy instead of
``'unsafe-inline'``: only that exact code runs (``inline_hashes``).
"""

import base64
import hashlib
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_INLINE = re.compile(r"<(script|style)(?:\s[^>]*)?>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)


def content_security_policy(script_src: str = "", style_src: str = "") -> str:
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self'{script_src}",
            f"style-src 'self'{style_src}",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def inline_hashes(html: str) -> tuple[str, str]:
    """CSP source lists (``" 'sha256-…'"``) for the inline scripts and styles of ``html``.

    A ``<script src=…>`` has no inline text and needs no hash (its empty text is skipped)."""
    found: dict[str, list[str]] = {"script": [], "style": []}
    for tag, text in _INLINE.findall(html):
        if not text.strip():
            continue
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        found[tag.lower()].append(f" 'sha256-{digest}'")
    return "".join(found["script"]), "".join(found["style"])


def headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", csp.encode()),
        (b"x-frame-options", b"DENY"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]


class SecurityHeaders:
    """ASGI middleware adding the headers to every HTTP response. ``csp_for_path`` may give
    a page its own policy (one with the hashes of its inline code); others get ``csp``."""

    def __init__(
        self, app: ASGIApp, csp: str | None = None, csp_for_path: dict[str, str] | None = None
    ) -> None:
        self.app = app
        self.csp = csp or content_security_policy()
        self.csp_for_path = csp_for_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = headers(self.csp_for_path.get(scope.get("path", ""), self.csp))
        names = {name for name, _ in added}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": kept + added}
            await send(message)

        await self.app(scope, receive, send_with_headers)
