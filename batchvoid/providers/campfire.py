"""Campfire: `Token` auth, `POST /coa/api/v1/invoice/{id}/void/` with a `void_date`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    json_body,
    says_already_void,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route, RowField


@dataclass(frozen=True, slots=True)
class Campfire(AdapterBase):
    base_url: str
    api_key: str = field(repr=False)

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # No idempotency header at Campfire; a repeated void answers "already voided".
        if item.void_date is None:  # fixed for every row when the job is recorded; never the host's today
            raise ValueError(f"line {item.line}: no void_date for a Campfire invoice")
        body = {"void_date": item.void_date}
        return Request(
            SPEC.void.method,
            SPEC.void.url(self.base_url, invoice_id=item.invoice_id),
            {
                "Authorization": f"Token {self.api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            orjson.dumps(body),
            secrets=(self.api_key,),
        )

    def parse_void(self, item: Item, response: Response) -> Outcome:
        body = json_body(response)
        if (
            response.status == 200
            and isinstance(body, dict)
            and (body.get("voided_date") or str(body.get("status", "")).lower() in ("void", "voided"))
        ):
            ref = body.get("voided_journal_entry")  # the usual answer: no reason to word
            return Outcome(OutcomeKind.VOIDED, "", 200, None if ref is None else str(ref))
        message: object = None
        if isinstance(body, dict):
            message = body.get("detail") or json.dumps(body, separators=(",", ":"))[:300]
        reason = describe(response, message)
        if response.status == 200:
            return Outcome(OutcomeKind.REJECTED, f"answered 200 but the invoice is not void: {reason}", 200)
        if response.status in (400, 409) and says_already_void(message):
            return Outcome(OutcomeKind.ALREADY_VOID, reason, response.status)
        if (shared := transient(response, reason)) is not None:
            return shared
        return Outcome(OutcomeKind.REJECTED, reason, response.status)


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Campfire:
    return Campfire(base_url, secrets["api_key"])


SPEC = ProviderSpec(
    type="campfire",
    title="Campfire",
    credentials={"api_key_env": "CAMPFIRE_API_KEY"},
    options={
        "void_date": "the void date of rows without one: YYYY-MM-DD, or 'today' (the default) in "
        "`timezone`, fixed once when the job is recorded",
        "timezone": "the IANA time zone of void_date = 'today', e.g. 'America/New_York' (default UTC)",
    },
    default_base_url="https://api.meetcampfire.com",
    void=Route("POST", "/coa/api/v1/invoice/{invoice_id}/void/"),
    documented_limits=(),
    example_limits=("5/1s",),
    limits_note="no rate limit is documented: conservative 5/s; voiding needs an admin key",
    row_fields=(RowField("void_date", "the void date, YYYY-MM-DD; default: the profile's void_date"),),
    build=_build,
)
