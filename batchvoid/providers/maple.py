"""Maple Billing: Bearer auth, company in the path, `Idempotency-Key` replayed for 24 h."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    describe,
    header,
    json_object,
    says_already_void,
    transient,
)
from batchvoid.providers.facts import Idempotency, ProviderSpec, Route, RowField

IDEMPOTENCY = Idempotency("Idempotency-Key", max_length=64, note="a key's first answer is replayed for 24 h")
COMPANY = RowField(
    "company_id", "the invoice's company (cmp_...); default: the profile's", "cmp_", required=True
)


@dataclass(frozen=True, slots=True)
class Maple(AdapterBase):
    base_url: str
    api_token: str = field(repr=False)
    company_id: str | None = None

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        company = item.company_id or self.company_id
        if company is None:  # the job file reader refuses such rows before anything is sent
            raise ValueError(f"line {item.line}: no company_id for a Maple invoice")
        return Request(
            SPEC.void.method,
            SPEC.void.url(self.base_url, company_id=company, invoice_id=item.invoice_id),
            {
                "Authorization": f"Bearer {self.api_token}",
                IDEMPOTENCY.header: idempotency_key,
                "Accept": "application/json",
            },
            secrets=(self.api_token,),
        )

    def parse_void(self, item: Item, response: Response) -> Outcome:
        fields = json_object(response)
        if response.status == 200 and fields.get("status") == "VOID":  # the usual answer: no reason to word
            return Outcome(OutcomeKind.VOIDED, "", 200, fields.get("uuid"))
        code = fields.get("error_code")
        message = fields.get("error_message")
        reason = describe(response, message and (f"{code}: {message}" if code else message))
        if code == "invoice_already_void" or says_already_void(message):
            return Outcome(OutcomeKind.ALREADY_VOID, reason, response.status)
        if response.status >= 500 and header(response.headers, "Idempotency-Used") == "true":
            # Maple replays a key's first answer for 24 h: retrying now only replays the error.
            reason = f"{reason} (replayed by Maple for this idempotency key; redrive after 24 h)"
            return Outcome(OutcomeKind.REJECTED, reason, response.status)
        if response.status == 409:  # idempotency_error: the same key is still being processed
            return Outcome(OutcomeKind.RETRYABLE, reason, 409)
        if (shared := transient(response, reason)) is not None:
            return shared
        return Outcome(OutcomeKind.REJECTED, reason, response.status)


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> Maple:
    return Maple(base_url, secrets["api_token"], options.get("company_id"))


SPEC = ProviderSpec(
    type="maple",
    title="Maple Billing",
    credentials={"api_token_env": "MAPLE_API_TOKEN"},
    options={"company_id": "the account's company id (cmp_...); a job row's company_id overrides it"},
    default_base_url="https://api.maplebilling.com",
    void=Route("POST", "/api/v1/companies/{company_id}/invoices/{invoice_id}/void"),
    documented_limits=(),
    example_limits=("5/1s",),
    limits_note="limits depend on the plan and may drop during incidents: conservative 5/s",
    idempotency=IDEMPOTENCY,
    row_fields=(COMPANY,),
    build=_build,
)
