"""Subscriber secrets and event signatures.

The signature header is ``X-Xinbao-Signature: <hex HMAC-SHA256>`` over the bytes
``timestamp + "." + body``, where timestamp is ``X-Xinbao-Timestamp`` (unix seconds) and body
the exact request body; the key is the subscriber's secret as shown (its UTF-8 bytes).
docs/integrators.md has the receiver's side in Python.

A secret is never stored. The subscriber row holds a random salt; the secret is
``"whsec_" + base64url(HMAC-SHA256(master secret, label + salt))``, computed when it is shown
once (creation, rotation) and when an event is signed. Whoever reads the database (a backup,
a stolen replica) learns salts, not secrets, and cannot sign events a receiver would take.
"""

import base64
import hashlib
import hmac
import secrets

_LABEL = b"xinbao/webhook-secret/v1|"
SECRET_PREFIX = "whsec_"

SIGNATURE_HEADER = "X-Xinbao-Signature"
TIMESTAMP_HEADER = "X-Xinbao-Timestamp"
EVENT_ID_HEADER = "X-Xinbao-Event-Id"
EVENT_TYPE_HEADER = "X-Xinbao-Event-Type"
ATTEMPT_HEADER = "X-Xinbao-Attempt"


def new_salt() -> str:
    return secrets.token_hex(32)


def subscriber_secret(master_key: bytes, salt: str) -> str:
    mac = hmac.new(master_key, _LABEL + salt.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
