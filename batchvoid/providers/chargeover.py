"""ChargeOver: Basic auth, `POST /api/v3/invoice/{id}/_action/void` with a `{}` body."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import (
    AdapterBase,
    basic_auth,
    describe,
    json_body,
    says_already_void,
    transient,
)
from batchvoid.providers.facts import ProviderSpec, Route


@dataclass(frozen=True, slots=True)
class ChargeOver(AdapterBase):
    base_url: str
    authorization: str = field(repr=False)

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        # ChargeOver has no idempotency header; voiding twice answers "already void".
        return Request(
            SPEC.void.method,
            SPEC.void.url(self.base_url, invoice_id=item.invoice_id),
            {
                "Authorization": self.authorization,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            b"{}",
            secrets=(self.authorization,),
        )

    def parse_void(self, item: Item, response: Response) -> Outcome:
        body = json_body(response)
        if response.status == 200 and isinstance(body, dict) and body.get("response") is True:
            return Outcome(OutcomeKind.VOIDED, "", 200)  # the usual answer: no reason to word
        message = body.get("message") if isinstance(body, dict) else None
        reason = describe(response, message)
        if response.status in (400, 409) and says_already_void(message):
            return Outcome(OutcomeKind.ALREADY_VOID, reason, response.status)
        if (shared := transient(response, reason)) is not None:
            return shared
        return Outcome(OutcomeKind.REJECTED, reason, response.status)


def _build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> ChargeOver:
    return ChargeOver(base_url, basic_auth(secrets["username"], secrets["password"]))


SPEC = ProviderSpec(
    type="chargeover",
    title="ChargeOver",
    credentials={"username_env": "CHARGEOVER_USERNAME", "password_env": "CHARGEOVER_PASSWORD"},
    options={},
    default_base_url=None,
    void=Route("POST", "/api/v3/invoice/{invoice_id}/_action/void"),
    documented_limits=(),
    example_limits=("5/1s",),
    limits_note="no rate limit is documented (429 without Retry-After): conservative 5/s",
    build=_build,
)
