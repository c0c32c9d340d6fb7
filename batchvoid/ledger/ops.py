"""The writes a run makes, as records: the engine makes them, the writer batches them, a backend applies them.

An item's way through a run is one claim (see `WorkQueue.claim`), then exactly one of:

- `Finish`: it reached a final state. On the common path (one request, one answer) this is
  the item's only write: the item row holds its last answer and its attempt count.
- `Release`: this run gives it back unfinished (a stop, a halt, a signal). It is pending
  again, unless a request for it may have gone out unanswered (a timeout), when it stays
  in flight and the next run resends it with the same idempotency key.

and, before either, an `Attempt` for each request that did not finish it (a 429, a retryable
error, the first answer when a status lookup decided): the attempt history.

`sent` counts requests actually sent for the item in this run; the backend adds it to the
item's `attempts`. A backend must apply an item's ops in the order they were made, and stamps
Finish and Release with the time it records them (an Attempt carries its own: when it was answered).
"""

from __future__ import annotations

from dataclasses import dataclass

from batchvoid.models import ItemState


@dataclass(frozen=True, slots=True)
class Attempt:
    """A request for the item that did not finish it, and what came of it."""

    item: int  # the ledger's row id
    number: int  # the item's request count, over all runs
    at: str
    outcome: str
    http_status: int | None
    latency_ms: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class Finish:
    """The item's final state, from its last answer."""

    item: int
    state: ItemState
    reason: str | None
    http_status: int | None
    reference: str | None
    sent: int


@dataclass(frozen=True, slots=True)
class Release:
    """The item goes back unfinished: pending, or still in flight if it may have been sent."""

    item: int
    sent: int
    maybe_sent: bool


Op = Attempt | Finish | Release
