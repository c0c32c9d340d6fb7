"""Stored first answers, replayed for later requests that carry the same idempotency key."""

from __future__ import annotations

from dataclasses import dataclass

from batchvoid.simulator.exchange import Answer


@dataclass(frozen=True, slots=True)
class Stored:
    """The first complete answer given for a key, what request it answered, and when."""

    fingerprint: str
    answer: Answer
    at: float = 0.0  # the request's wall time


class IdempotencyStore:
    """One provider account's keys; the first answer for a key is kept, later ones are not."""

    __slots__ = ("_stored",)

    def __init__(self) -> None:
        self._stored: dict[str, Stored] = {}

    def get(self, key: str, *, now: float = 0.0, ttl_s: float | None = None) -> Stored | None:
        """The answer kept for `key`; with `ttl_s`, one kept longer than that before `now` is
        forgotten (the provider replays a key only for so long)."""
        stored = self._stored.get(key)
        if stored is not None and ttl_s is not None and now - stored.at > ttl_s:
            del self._stored[key]
            return None
        return stored

    def keep(self, key: str, fingerprint: str, answer: Answer, *, at: float = 0.0) -> Answer:
        """Store `answer` for `key` unless one is stored already; returns `answer`."""
        self._stored.setdefault(key, Stored(fingerprint, answer, at))
        return answer

    def clear(self) -> None:
        self._stored.clear()
