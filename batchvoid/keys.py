"""Idempotency keys: the same (job, provider, invoice) gives the same key on every attempt and run."""

from __future__ import annotations

import hashlib

PREFIX = "bv1-"


def idempotency_key(job_id: str, provider: str, invoice_id: str) -> str:
    """A 52-character key (Maple allows 64), from a hash so that it leaks nothing of the job."""
    material = "\x1f".join((job_id, provider, invoice_id)).encode()
    return PREFIX + hashlib.sha256(material).hexdigest()[:48]
