"""Recurly (API v3): Basic with the private key, the versioned `Accept` header, `void` for a
credit invoice and `mark_failed` for a charge invoice, chosen by the row's `invoice_type` or,
when it gives none, by a read of the invoice. No idempotency header: a repeat answers 422."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    basic_auth,
    describe,
    header,
    json_object,
    maybe_already_void,
    settled,
    string,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route, RowField

VERSION = "v2021-02-25"
ACCEPT = f"application/vnd.recurly.{VERSION}"  # required: Recurly refuses a request without a version
INVOICE_TYPE = RowField(
    "invoice_type",
    "credit (voided) or charge (marked failed); empty: batchvoid reads the invoice's type first",
    choices=("charge", "credit"),
)
MARK_FAILED = Route("PUT", "/invoices/{invoice_id}/mark_failed")
_DONE = ("voided", "failed")  # the states a void (credit) or a mark_failed (charge) leaves


def _type(item: Item) -> str | None:
    """The row's invoice type, "charge" or "credit" (checked when the job was read), or None."""
    given = item.metadata.get(INVOICE_TYPE.name, "").strip().lower()
    return given or None


@dataclass(frozen=True, slots=True)
class Recurly(AdapterBase):
    base_url: str
    authorization: str = field(repr=False)
    api_key: str = field(repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)  # for X-RateLimit-Reset

    def _request(self, route: Route, item: Item) -> Request:
        headers = {"Authorization": self.authorization, "Accept": ACCEPT}
        url = route.url(self.base_url, invoice_id=item.invoice_id)
        return Request(route.method, url, headers, secrets=(self.authorization, self.api_key))

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # Recurly has no idempotency header; a repeat of either call answers 422, which the read settles.
        return self._request(SPEC.void if _type(item) == "credit" else MARK_FAILED, item)

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200:
            state = fields.get("state")
            if state == "voided":  # the usual answer: no reason to word
                return Outcome(OutcomeKind.VOIDED, "", 200, string(fields.get("id")))
            if state == "failed":  # a charge invoice: what Recurly has in place of a void
                return Outcome(OutcomeKind.VOIDED, "marked failed", 200, string(fields.get("id")))
            return Outcome(OutcomeKind.REJECTED, f"answered 200 but the invoice state is {state!r}", 200)
        outcome = self._error(response, fields)
        if outcome is not None:
            return outcome
        reason = _reason(response, fields)
        if response.status == 406:  # invalid_api_version
            reason = (
                f"{reason} (batchvoid sends Accept: {ACCEPT}; Recurly no longer takes it: upgrade batchvoid)"
            )
        elif response.status == 422:  # "did not meet the conditions": void, closed, or another type
            return maybe_already_void(SPEC, response, reason)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def _error(self, response: Response, fields: dict[str, Any]) -> Outcome | None:
        """The outcome of an answer every call shares (auth, throttling, server errors), or None."""
        reason = _reason(response, fields)
        if _error(fields).get("type") == "simultaneous_request":  # another request on the invoice
            return Outcome(OutcomeKind.RETRYABLE, reason, response.status)
        shared = transient(response, reason)
        if shared is not None and shared.kind is OutcomeKind.THROTTLED and shared.retry_after is None:
            shared = replace(shared, retry_after=self._reset(response))
        return shared

    def _reset(self, response: Response) -> float | None:
        """Seconds until X-RateLimit-Reset (Unix seconds): Recurly documents no Retry-After."""
        value = (header(response.headers, "X-RateLimit-Reset") or "").strip()
        return max(0.0, int(value) - self.clock()) if value.isdigit() else None

    def read_request(self, item: Item) -> Request | None:
        return None if _type(item) is not None else self._request(_LOOKUP, item)

    def parse_read(self, item: Item, response: Response) -> Item | Outcome:
        fields = json_object(response)
        if response.status != 200:
            shared = self._error(response, fields)
            reason = f"reading its invoice type: {_reason(response, fields)}"
            return shared or Outcome(OutcomeKind.REJECTED, reason, response.status)
        kind, state = fields.get("type"), fields.get("state")
        if state in _DONE:  # voided or marked failed before this run asked: nothing to send
            return Outcome(OutcomeKind.ALREADY_VOID, f"invoice state: {state}", 200, string(fields.get("id")))
        if kind not in ("charge", "credit", "legacy"):
            reason = (
                f"Recurly's invoice has no type batchvoid knows ({kind!r}), so it cannot choose "
                "between void and mark_failed: give invoice_type (credit or charge) in the row"
            )
            return Outcome(OutcomeKind.REJECTED, reason, 200)
        # Only a credit invoice is voided; a charge (or legacy) invoice is marked failed.
        chosen = "credit" if kind == "credit" else "charge"
        return item._replace(metadata={**item.metadata, INVOICE_TYPE.name: chosen})

    def lookup_request(self, item: Item) -> Request | None:
        return self._request(_LOOKUP, item)

    def parse_lookup(self, item: Item, response: Response, rejected: Outcome) -> Outcome:
        fields = json_object(response)
        if response.status != 200:
            reason = _reason(response, fields)
            return transient(response, f"status lookup: {reason}") or rejected
        outcome = settled(SPEC, rejected, fields.get("state"))
        kind, asked = fields.get("type"), _type(item)
        mismatched = (
            kind in ("charge", "credit", "legacy") and asked and (kind == "credit") != (asked == "credit")
        )
        if outcome.kind is OutcomeKind.REJECTED and mismatched:
            reason = (
                f"{outcome.reason}; it is a {kind} invoice but the row's invoice_type says "
                f"{asked}: fix the row, or leave invoice_type empty to have it read"
            )
            outcome = replace(outcome, reason=reason)
        return outcome


def _error(fields: dict[str, Any]) -> dict[str, Any]:
    error = fields.get("error")
    return error if isinstance(error, dict) else {}


def _reason(response: Response, fields: dict[str, Any]) -> str:
    error = _error(fields)
    kind, message = error.get("type"), error.get("message")
    return describe(response, message and (f"{kind}: {message}" if kind else message))


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Recurly:
    key = secrets["api_key"]
    basic = basic_auth(key)  # the private key, an empty password
    return Recurly(base_url, basic, key)


SPEC = ProviderSpec(
    type="recurly",
    title="Recurly",
    credentials={"api_key_env": "RECURLY_API_KEY"},
    options={},
    default_base_url="https://v3.recurly.com",
    void=Route("PUT", "/invoices/{invoice_id}/void"),
    other_voids=(MARK_FAILED,),
    lookup=Route("GET", "/invoices/{invoice_id}"),
    void_status="voided",
    done_statuses=("failed",),
    documented_limits=("2000/300s",),
    example_limits=("400/60s",),
    limits_note="documented per site over a sliding 5-minute window: sandbox 400 requests/min "
    "(all count), production 1,000/min (only GETs count); the example holds 400 in any minute",
    row_fields=(INVOICE_TYPE,),
    build=_build,
)
_LOOKUP = SPEC.lookup or SPEC.void
