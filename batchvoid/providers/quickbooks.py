"""QuickBooks Online (Intuit Accounting API v3): OAuth 2.0, a read for the SyncToken, then the void.

Every void names the invoice's current `SyncToken`, so each item is a read (`GET
/v3/company/{realmId}/invoice/{id}`) and then `POST /v3/company/{realmId}/invoice?operation=void`
with `{"Id", "SyncToken"}`. The read also confirms "already void", which Intuit does not
document an answer for: a voided invoice keeps its place in the books with `TotalAmt` and
`Balance` 0 and "Voided" at the start of its `PrivateNote`. A SyncToken that changed in
between (a payment landed) is a 400 with code 5010, "Stale Object Error": read again, void again.

Idempotency is the `requestid` query parameter: a repeat gets the first answer. A requestid
reused for another request replays that old answer too, so it is derived from the item's
idempotency key *and* the SyncToken: the same for every attempt and run of one void, a new one
once the invoice changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from batchvoid.models import Item, Outcome, OutcomeKind, Request, Response
from batchvoid.providers.base import AdapterBase, describe, json_body, transient
from batchvoid.providers.facts import Idempotency, OAuthFacts, ProviderSpec, Route

if TYPE_CHECKING:
    from batchvoid.oauth import AccessToken

IDEMPOTENCY = Idempotency(
    "requestid",
    max_length=50,  # 36 for batch requests, which batchvoid does not send
    note="derived from the item's key and the SyncToken: a repeat gets the first answer, window not "
    "documented",
    in_query=True,
)
SYNC_TOKEN = "SyncToken"  # noqa: S105 - the item metadata key for what the read gave (no row field has it)
STALE_OBJECT = "5010"  # the SyncToken given is not the invoice's current one
NOT_FOUND = "610"  # "Object Not Found"


def request_id(idempotency_key: str, sync_token: str) -> str:
    """The `requestid` of the void of one invoice at one SyncToken: stable across attempts and runs."""
    digest = hashlib.sha256(f"{idempotency_key}\n{sync_token}".encode()).hexdigest()
    return f"bv1-{digest[:40]}"


def is_voided(invoice: Mapping[str, Any]) -> bool:
    """Whether a QuickBooks invoice is voided: amounts zeroed and "Voided" prepended to its note."""
    note = invoice.get("PrivateNote")
    return (
        _zero(invoice.get("TotalAmt"))
        and _zero(invoice.get("Balance"))
        and isinstance(note, str)
        and note.startswith("Voided")
    )


def _zero(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


@dataclass(frozen=True, slots=True)
class QuickBooks(AdapterBase):
    base_url: str
    token: AccessToken = field(repr=False)
    realm_id: str

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token.access_token}", "Accept": "application/json"}

    def read_request(self, item: Item) -> Request | None:
        """The read every void needs: the invoice, for its SyncToken (and whether it is void)."""
        if SYNC_TOKEN in item.metadata:
            return None  # read for this void already
        url = _READ.url(self.base_url, realm_id=self.realm_id, invoice_id=item.invoice_id)
        return Request(_READ.method, url, self._headers(), secrets=self.token.secrets)

    def parse_read(self, item: Item, response: Response) -> Item | Outcome:
        """The item at the SyncToken the read gave, or the outcome the read settles by itself."""
        body = json_body(response)
        invoice = body.get("Invoice") if isinstance(body, dict) else None
        if response.status == 200 and isinstance(invoice, dict):
            if is_voided(invoice):
                return Outcome(OutcomeKind.ALREADY_VOID, "", 200, _reference(invoice))
            sync_token = invoice.get("SyncToken")
            if isinstance(sync_token, int) and not isinstance(sync_token, bool):
                sync_token = str(sync_token)
            if isinstance(sync_token, str) and sync_token.isdigit():
                return item._replace(metadata={**item.metadata, SYNC_TOKEN: sync_token})
            return Outcome(OutcomeKind.REJECTED, "the invoice read gave no SyncToken", 200)
        _, message = _fault(body)
        reason = describe(response, message)
        if (shared := transient(response, f"invoice read: {reason}")) is not None:
            return shared
        return Outcome(OutcomeKind.REJECTED, reason, response.status)

    def void_request(self, item: Item, idempotency_key: str) -> Request:
        sync_token = item.metadata[SYNC_TOKEN]  # from parse_read: the engine reads first
        query = urlencode({IDEMPOTENCY.header: request_id(idempotency_key, sync_token)})
        url = SPEC.void.url(self.base_url, realm_id=self.realm_id) + "&" + query  # after ?operation=void
        headers = {**self._headers(), "Content-Type": "application/json"}
        body = orjson.dumps({"Id": item.invoice_id, "SyncToken": sync_token})
        return Request(SPEC.void.method, url, headers, body, secrets=self.token.secrets)

    def parse_void(self, item: Item, response: Response) -> Outcome:
        body = json_body(response)
        invoice = body.get("Invoice") if isinstance(body, dict) else None
        if response.status == 200 and isinstance(invoice, dict):
            if is_voided(invoice):
                return Outcome(OutcomeKind.VOIDED, "", 200, _reference(invoice))
            return Outcome(OutcomeKind.REJECTED, "answered 200 but the invoice is not voided", 200)
        code, message = _fault(body)
        reason = describe(response, message)
        if (shared := transient(response, reason)) is not None:
            return shared
        if code == STALE_OBJECT:  # changed since the read (a payment?): read it again, then decide
            return Outcome(OutcomeKind.RETRYABLE, f"{reason} (the invoice changed since it was read)", 400)
        return Outcome(OutcomeKind.REJECTED, reason, response.status)


def _reference(invoice: Mapping[str, Any]) -> str | None:
    value = invoice.get("Id")
    return str(value) if value is not None else None


def _fault(body: Any) -> tuple[str | None, str]:
    """Intuit's `Fault.Error[0]`: its code, and its message and detail as one line."""
    fault = body.get("Fault") if isinstance(body, dict) else None
    errors = fault.get("Error") if isinstance(fault, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        if isinstance(body, dict) and isinstance(body.get("fault"), dict):  # the 401 gateway's lower case
            return _fault({"Fault": {"Error": body["fault"].get("error")}})
        return None, ""
    first = errors[0]
    code = first.get("code")
    words = [str(first[key]) for key in ("Message", "message", "Detail", "detail") if first.get(key)]
    text = ": ".join(dict.fromkeys(words))
    return (str(code) if code is not None else None), (f"{text} (code {code})" if code else text)


OAUTH = OAuthFacts(
    token_url="https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",  # noqa: S106 - a URL
    access_lifetime_s=3600,
    authorize="README: 'Authorising Xero and QuickBooks'",
    grace=(
        "The file still holds the previous refresh token; should QuickBooks refuse it, "
        "authorise batchvoid again"
    ),
)


def _connect(base_url: str, token: AccessToken, options: Mapping[str, str]) -> QuickBooks:
    return QuickBooks(base_url, token, options["realm_id"])


def _no_build(base_url: str, secrets: Mapping[str, str], options: Mapping[str, str]) -> QuickBooks:
    raise ValueError("a QuickBooks adapter is built from its OAuth connection (ProviderSpec.connect)")


SPEC = ProviderSpec(
    type="quickbooks",
    title="QuickBooks Online",
    credentials={"client_id_env": "QUICKBOOKS_CLIENT_ID", "client_secret_env": "QUICKBOOKS_CLIENT_SECRET"},
    options={"realm_id": "the company's realm id (the realmId the authorisation's redirect carries)"},
    default_base_url="https://quickbooks.api.intuit.com",
    void=Route("POST", "/v3/company/{realm_id}/invoice?operation=void"),
    # Read before every void, for the SyncToken; it also tells a voided invoice (`is_voided`).
    lookup=Route("GET", "/v3/company/{realm_id}/invoice/{invoice_id}"),
    documented_limits=("500/60s",),
    example_limits=("500/60s",),
    limits_note="documented, per company: 500 a minute and 10 requests in flight; each void is a "
    "read and a void",
    idempotency=IDEMPOTENCY,
    build=_no_build,
    required_options=("realm_id",),
    requests_per_item=2,
    max_in_flight=10,
    oauth=OAUTH,
    connect=_connect,
)
_READ = SPEC.lookup or SPEC.void
