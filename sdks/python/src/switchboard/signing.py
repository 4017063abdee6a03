"""Request signing: ``X-Switchboard-Signature`` (docs/PROTOCOL.md)."""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Switchboard-Signature"


def sign(secret: str, t_ms: int, method: str, path: str, body: bytes) -> str:
    """The header value for a call: HMAC-SHA256 with the session's secret
    over ``t``, the method, the path and query as sent, and the hex SHA-256
    of the body as sent."""
    digest = hashlib.sha256(body).hexdigest()
    msg = f"{t_ms}\n{method}\n{path}\n{digest}".encode()
    mac = hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
    return f"t={t_ms},v1={mac}"
