"""Stored first answers, replayed for later requests that carry the same idempotency key."""

from __future__ import annotations

from dataclasses import dataclass

from batchvoid.simulator.exchange import Answer


@dataclass(frozen=True, slots=True)
class Stored:
    """The first complete answer given for a key, and what request it answered."""

    fingerprint: str
    answer: Answer


class IdempotencyStore:
    """One provider account's keys; the first answer for a key is kept, later ones are not."""

    __slots__ = ("_stored",)

    def __init__(self) -> None:
        self._stored: dict[str, Stored] = {}

    def get(self, key: str) -> Stored | None:
        return self._stored.get(key)

    def keep(self, key: str, fingerprint: str, answer: Answer) -> Answer:
        """Store `answer` for `key` unless one is stored already; returns `answer`."""
        self._stored.setdefault(key, Stored(fingerprint, answer))
        return answer

    def clear(self) -> None:
        self._stored.clear()
