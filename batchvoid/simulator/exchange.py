"""The records passed between the HTTP server and the simulated providers.

Providers are sans-IO: they get an `Incoming` (what the client sent) and give back an
`Answer` (what to send), never touching a socket. The server does all I/O.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from batchvoid.simulator.stats import Tally

JSON = "application/json"
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class Action(enum.Enum):
    """What a provider route does."""

    VOID = "void"
    LOOKUP = "lookup"  # read an invoice's status (Rapyd's GET invoice)
    TOKEN = "token"  # noqa: S105 - an OAuth 2.0 token endpoint: refresh


@dataclass(frozen=True, slots=True)
class Incoming:
    """One request as a provider sees it."""

    method: str
    raw_path: str  # as sent: percent-encoded, with the query string
    headers: Mapping[str, str]  # case-insensitive when it comes from the server
    params: Mapping[str, str]  # path parameters, percent-decoded
    body: bytes
    wall: float  # time.time() at arrival


@dataclass(frozen=True, slots=True)
class Answer:
    """One response to send, and the counter it bumps."""

    status: int
    body: bytes
    tally: Tally
    content_type: str = JSON
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)

    def with_headers(self, headers: Mapping[str, str]) -> Answer:
        """This answer with `headers` added."""
        return Answer(self.status, self.body, self.tally, self.content_type, {**self.headers, **headers})

    def counted_as(self, tally: Tally) -> Answer:
        """This answer counted under another tally (a replay, say)."""
        return Answer(self.status, self.body, tally, self.content_type, self.headers)


def dump(payload: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(payload, separators=(",", ":")).encode()


def json_answer(status: int, payload: Any, tally: Tally) -> Answer:
    """An `application/json` answer."""
    return Answer(status, dump(payload), tally)


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body; raises `ValueError` when it is not JSON."""
    return json.loads(body)
