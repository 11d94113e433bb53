"""Who may read a process's ``/metrics``: one rule for the cloud API and the cabinet's kiosk.

Metrics hold no personal data (no mobile number, code or application number: labels are
route templates, locker ids, event types and board addresses), but they still describe the
deployment (which lockers, how busy, which boards are failing), so they are not public:

- with a token configured, a scrape must send ``Authorization: Bearer <token>`` (compared in
  constant time); an allow list, if also given, must match the client's address as well;
- with no token, only the client addresses in the allow list may scrape, and that list is
  this machine's loopback unless configured.

A refusal names its reason (``metrics_token`` or ``metrics_address``); the caller answers it
in its own error shape.
"""

import hmac
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

Network = IPv4Network | IPv6Network
LOOPBACK: tuple[Network, ...] = (ip_network("127.0.0.0/8"), ip_network("::1/128"))

MESSAGES = {
    "metrics_token": (
        "读取运行指标需要有效的令牌",
        "Reading metrics needs a valid token (Authorization: Bearer ...).",
    ),
    "metrics_address": (
        "此地址不允许读取运行指标",
        "This address may not read metrics.",
    ),
}


@dataclass(frozen=True)
class ScrapeGate:
    token: str = field(default="", repr=False)
    allow: tuple[Network, ...] | None = None  # None: loopback without a token, any with one

    def refusal(self, client_host: str | None, authorization: str | None) -> str | None:
        """None when this scrape may read the metrics, else the reason word."""
        allowed = self.allow if self.allow is not None else (() if self.token else LOOPBACK)
        if allowed and not _within(client_host, allowed):
            return "metrics_address"
        if self.token:
            scheme, _, given = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), self.token.encode()
            ):
                return "metrics_token"
        return None


def _within(host: str | None, networks: tuple[Network, ...]) -> bool:
    if not host:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 from a dual-stack socket
    return any(address in n or (mapped is not None and mapped in n) for n in networks)
