"""Every request the Lago, Xero, Recurly and Rapyd adapters build, checked by openapi-core
against the operation of the provider's own published OpenAPI spec: path, method, parameters,
headers, security scheme and body.

The specs are not in this repository: `<repo>/../shared/providers/specs/` holds Lago's, Xero's
and Recurly's, `<repo>/../shared/providers/rapyd-openapi.yaml` Rapyd's. A test whose spec is
absent skips on a developer's machine and fails under CI=true, as the PostgreSQL tests do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.security.exceptions import SecurityProviderError
from openapi_core.security.factories import SecurityProviderFactory
from openapi_core.security.providers import BaseProvider
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.validation.request.exceptions import (
    InvalidRequestBody,
    MissingRequiredParameter,
    SecurityValidationError,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

from batchvoid.keys import idempotency_key
from batchvoid.models import Item, Request
from batchvoid.providers import REGISTRY
from batchvoid.providers.base import header
from batchvoid.providers.lago import REGIONS
from tests.conftest import unavailable

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "providers"
SPECS = {
    "lago": SHARED / "specs" / "lago-openapi.yaml",
    "recurly": SHARED / "specs" / "recurly-openapi.yaml",
    "xero": SHARED / "specs" / "xero-accounting.yaml",
    "rapyd": SHARED / "rapyd-openapi.yaml",
}
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the four specs in ~1 s, not ~6


class OAuth2Bearer(BaseProvider):
    """openapi-core checks no `oauth2` scheme (it only warns, which this suite makes an error):
    an OAuth 2.0 access token is sent as `Authorization: Bearer` (RFC 6750), so check that."""

    def __call__(self, parameters: RequestParameters) -> Any:
        scheme, _, token = str(parameters.header.get("Authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SecurityProviderError("an OAuth 2.0 request carries Authorization: Bearer <access token>")
        return token


class Security(SecurityProviderFactory):
    """openapi-core's security checks, with `oauth2` (Xero's scheme) checked as a Bearer token."""

    PROVIDERS = {**SecurityProviderFactory.PROVIDERS, "oauth2": OAuth2Bearer}  # noqa: RUF012 - as the base's


# The requests, not the whole document: three of the four specs fail openapi-spec-validator
# (Xero's `default: 'false'` on 23 read-only booleans, Recurly's `default: all` outside a list
# filter's enum and an undeclared `site_id`, Rapyd's repeated enum value), none of it in a field
# batchvoid sends, and checking 1 MB costs seconds. Strict bodies: a property the schema does
# not name (a misspelt field) is an error, not ignored.
CONFIG = Config(
    spec_validator_cls=None,
    security_provider_factory=Security(),
    additional_properties_default_policy="forbid",
)


@dataclass
class Wire:
    """An adapter's `Request` as openapi-core reads a request (its `Request` protocol)."""

    request: Request
    parameters: RequestParameters = field(init=False)

    def __post_init__(self) -> None:
        query = ImmutableMultiDict(parse_qsl(urlsplit(self.request.url).query))
        self.parameters = RequestParameters(query=query, header=Headers(dict(self.request.headers)))

    @property
    def host_url(self) -> str:
        parts = urlsplit(self.request.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def path(self) -> str:
        return urlsplit(self.request.url).path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.body

    @property
    def content_type(self) -> str:
        return (header(self.request.headers, "Content-Type") or "").lower()


@dataclass(frozen=True, slots=True)
class Contract:
    """A provider's published spec, read once: the validator, and the raw document for its prose."""

    api: OpenAPI
    document: Mapping[str, Any]

    def operation(self, request: Request) -> str:
        """The operationId the request's method and URL match in the spec (PathNotFound if none)."""
        found = APICallPathFinder(self.api.spec).find(request.method.lower(), request.url)
        return str((found.operation / "operationId").read_str())

    def validate(self, request: Request) -> None:
        self.api.validate_request(Wire(request))


@pytest.fixture(scope="session")
def contract() -> Callable[[str], Contract]:
    """The contract of a provider by its type, each spec parsed at most once per session."""
    read: dict[str, Contract] = {}

    def get(provider: str) -> Contract:
        if provider not in read:
            path = SPECS[provider]
            if not path.is_file():
                unavailable(
                    here=f"no {provider} spec at {path}: the contract tests read it from the shared folder beside the repository",
                    under_ci=f"{path} is missing under CI: the {provider} contract tests need shared/ beside the clone",
                )
            document = yaml.load(path.read_bytes(), Loader=Loader)
            read[provider] = Contract(OpenAPI.from_dict(document, config=CONFIG), document)
        return read[provider]

    return get


KEY = idempotency_key("march.csv", "contracts", "one")
LAGO_ID = "1a901a90-1a90-1a90-1a90-1a901a901a90"  # a lago_id is a UUID
XERO_ID = "a03ffcd2-5d91-4c7e-b483-318584e9e439"  # an InvoiceID is a UUID
TENANT = "00000000-0000-4000-8000-00000000a11c"


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str = "xero-access-token"
    secrets: tuple[str, ...] = ("xero-access-token",)


def adapter(provider: str, base_url: str | None = None) -> Any:
    """The provider's real adapter, built as a run builds it, for its default base URL."""
    spec = REGISTRY[provider]
    url = base_url or spec.default_base_url or ""
    if spec.connect is not None:
        return spec.connect(url, Token(), {"tenant_id": TENANT})
    secrets = {"api_key": "key_0123456789", "access_key": "rak_0123456789", "secret_key": "rsk_0123456789"}
    return spec.build(url, {role: secrets[role] for role in spec.roles}, {})


@dataclass(frozen=True, slots=True)
class Case:
    """One request an adapter can build (its void, the read before it, the lookup after a state
    error), and the operationId of the spec it must be."""

    provider: str
    call: str  # "void_request", "read_request" or "lookup_request"
    operation: str
    invoice_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        given = "".join(f" {name}={value}" for name, value in self.metadata.items())
        return f"{self.provider} {self.call}{given}"

    def request(self) -> Request:
        """The request the provider's real adapter builds for this case."""
        item = Item(2, self.provider, self.invoice_id, metadata=self.metadata)
        call = getattr(adapter(self.provider), self.call)
        request: Request | None = call(item, KEY) if self.call == "void_request" else call(item)
        assert request is not None, f"{self}: the adapter built no request"
        return request


RECURLY_ID = "e28zov4fw0v2"
RAPYD_ID = "invoice_8a7200327e12b98cf5b038a3fdb2f642"
CASES = [
    Case("lago", "void_request", "voidInvoice", LAGO_ID),
    Case("lago", "lookup_request", "findInvoice", LAGO_ID),
    Case("recurly", "void_request", "void_invoice", RECURLY_ID, {"invoice_type": "credit"}),
    Case("recurly", "void_request", "mark_invoice_failed", RECURLY_ID, {"invoice_type": "charge"}),
    Case("recurly", "read_request", "get_invoice", RECURLY_ID),  # no invoice_type: read it first
    Case("recurly", "lookup_request", "get_invoice", RECURLY_ID, {"invoice_type": "credit"}),
    Case("xero", "void_request", "updateInvoice", XERO_ID),
    Case("xero", "lookup_request", "getInvoice", XERO_ID),
    Case("rapyd", "void_request", "voidInvoice", RAPYD_ID),
    Case("rapyd", "lookup_request", "retrieveInvoice", RAPYD_ID),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_each_request_is_its_spec_operation_and_valid_against_it(
    case: Case, contract: Callable[[str], Contract]
) -> None:
    """The adapter's request is the expected operation of the provider's published spec (method,
    path, on one of its servers) and passes openapi-core's request validation there."""
    spec = contract(case.provider)
    request = case.request()
    assert spec.operation(request) == case.operation
    spec.validate(request)


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_the_cases_cover_every_route_in_the_provider_s_facts(provider: str) -> None:
    """Each route the facts name (void, other voids, read) is some case's request, and no case
    goes elsewhere: a route added to the facts gets a contract case, or this fails."""
    facts = REGISTRY[provider]
    named = {route for route in (facts.void, *facts.other_voids, facts.lookup) if route is not None}
    covered = set()
    for case in (case for case in CASES if case.provider == provider):
        request = case.request()
        url = facts.default_base_url or ""
        routes = [
            r
            for r in named
            if (r.method, r.url(url, invoice_id=case.invoice_id)) == (request.method, request.url)
        ]
        assert routes, f"{case}: {request.method} {request.url} is none of the routes in its facts"
        covered.update(routes)
    assert covered == named


@pytest.mark.parametrize("region", sorted(REGIONS))
def test_lago_regions_are_servers_of_its_spec(region: str, contract: Callable[[str], Contract]) -> None:
    """Each named Lago region's void is the spec's voidInvoice on one of its servers (US, EU)."""
    spec = contract("lago")
    request = adapter("lago", REGIONS[region]).void_request(Item(2, "lago", LAGO_ID), KEY)
    assert spec.operation(request) == "voidInvoice"
    spec.validate(request)


def test_recurly_sends_an_accept_header_its_spec_lists(contract: Callable[[str], Contract]) -> None:
    """Recurly's spec requires the API version in Accept, in prose (not a parameter openapi-core
    checks): every Recurly request carries one of the forms the spec lists."""
    description = contract("recurly").document["info"]["description"]
    listed = set(re.findall(r"`Accept: (application/vnd\.recurly\.[^`]+)`", description))
    assert listed, "the Recurly spec no longer lists its Accept header forms: read its Versioning section"
    for case in (case for case in CASES if case.provider == "recurly"):
        assert header(case.request().headers, "Accept") in listed, case


def test_xero_idempotency_key_is_within_the_spec_s_limit(contract: Callable[[str], Contract]) -> None:
    """Xero's Idempotency-Key is "128 character max" (prose): the facts say so, and a longer key is cut."""
    described = contract("xero").document["components"]["parameters"]["idempotencyKey"]["description"]
    stated = re.search(r"(\d+) character max", described)
    assert stated, f"the Xero spec no longer states the key's longest length: {described!r}"
    limit = int(stated[1])
    assert REGISTRY["xero"].idempotency is not None
    assert REGISTRY["xero"].idempotency.max_length == limit
    request = adapter("xero").void_request(Item(2, "xero", XERO_ID), "k" * (limit + 50))
    assert len(request.headers["Idempotency-Key"]) == limit
    contract("xero").validate(request)


BROKEN_BODY = {"Invoices": [{"InvoiceID": XERO_ID, "Status": "VOID"}]}
MISSPELT_BODY = {"Invoices": [{"InvoiceID": XERO_ID, "status": "VOIDED"}]}


@pytest.mark.parametrize(
    ("case", "headers", "body", "refusal", "detail"),
    [
        ("xero void_request", {"xero-tenant-id": None}, None, MissingRequiredParameter, "xero-tenant-id"),
        ("xero void_request", {"Authorization": "Basic eDp5"}, None, SecurityValidationError, "OAuth2"),
        ("xero void_request", {}, BROKEN_BODY, InvalidRequestBody, "'VOID' is not one of"),
        ("xero void_request", {}, MISSPELT_BODY, InvalidRequestBody, "'status' was unexpected"),
        ("lago void_request", {"Authorization": None}, None, SecurityValidationError, "bearerAuth"),
        (
            "recurly void_request invoice_type=credit",
            {"Authorization": "Bearer x"},
            None,
            SecurityValidationError,
            "api_key",
        ),
        ("rapyd void_request", {"signature": None}, None, MissingRequiredParameter, "signature"),
        ("rapyd lookup_request", {"Content-Type": None}, None, MissingRequiredParameter, "Content-Type"),
    ],
)
def test_the_validator_refuses_a_broken_request(
    case: str,
    headers: Mapping[str, str | None],
    body: Any,
    refusal: type[Exception],
    detail: str,
    contract: Callable[[str], Contract],
) -> None:
    """The check has teeth: a request with a required header dropped, another auth scheme, a
    wrong status or a misspelt field in the body is refused, naming what is wrong."""
    request = next(c for c in CASES if str(c) == case).request()
    changed = {name: value for name, value in request.headers.items() if name not in headers}
    changed.update({name: value for name, value in headers.items() if value is not None})  # None: dropped
    bad = replace(request, headers=changed, body=request.body if body is None else orjson.dumps(body))
    with pytest.raises(refusal) as refused:
        contract(case.partition(" ")[0]).validate(bad)
    cause = refused.value.__cause__
    said = f"{refused.value!r} {cause!r} {' '.join(map(str, getattr(cause, 'schema_errors', ())))}"
    assert detail in said
