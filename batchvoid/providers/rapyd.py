"""Rapyd: HMAC-signed requests, `idempotency` header, status envelope answers."""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(
    *,
    method: str,
    path: str,
    salt: str,
    timestamp: int,
    access_key: str,
    secret_key: str,
    body: str = "",
) -> str:
    """Rapyd's request signature: base64 of the hex HMAC-SHA256 of the documented string."""
    to_sign = f"{method.lower()}{path}{salt}{timestamp}{access_key}{secret_key}{body}"
    digest = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return base64.b64encode(digest.encode()).decode()
