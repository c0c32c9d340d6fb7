"""Job files for the benchmark: every invoice open (voidable), the five providers in turn."""

from __future__ import annotations

import uuid
from pathlib import Path

PROVIDERS = ("chargeover", "rapyd", "campfire", "maple", "sellapp")


def invoice_id(provider: str, n: int) -> str:
    """The n-th invoice id of a provider, shaped like that provider's ids; never paid/void/missing."""
    if provider == "rapyd":
        return f"invoice_{n:032x}"
    if provider == "maple":
        return str(uuid.UUID(int=n))
    return str(100_000 + n)


def write_job(path: Path, items: int) -> Path:
    """A CSV job of `items` rows; row i goes to provider i % 5, so every lane gets a fifth."""
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("provider,invoice_id\n")
        for i in range(items):
            provider = PROVIDERS[i % len(PROVIDERS)]
            f.write(f"{provider},{invoice_id(provider, i // len(PROVIDERS))}\n")
    return path


def per_provider(path: Path, items: int) -> Path:
    """A CSV job of `items` rows for each of the five providers (5 * items in all)."""
    return write_job(path, items * len(PROVIDERS))
