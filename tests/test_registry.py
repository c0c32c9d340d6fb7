"""The provider registry: one record of facts per provider, read by every part that needs it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from batchvoid import catalog
from batchvoid.config import builtin, load
from batchvoid.errors import ConfigError
from batchvoid.jobfile import read
from batchvoid.models import Item, OutcomeKind, Response, RowError
from batchvoid.providers import REGISTRY
from batchvoid.providers.base import maybe_already_void, settled
from batchvoid.providers.facts import Route
from batchvoid.simulator import CREDENTIALS, PROVIDER_TYPES
from batchvoid.simulator.providers import SIMULATED, simulated_providers
from batchvoid.simulator.providers.base import Action

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_registered_provider_has_a_simulated_twin_with_the_same_credential_roles() -> None:
    """Adding a provider without its simulated answers, or with other roles, fails here."""
    assert tuple(REGISTRY) == PROVIDER_TYPES
    assert set(SIMULATED) == set(REGISTRY)
    for kind, spec in REGISTRY.items():
        assert set(CREDENTIALS[kind]) == set(spec.roles), kind
    assert tuple(p.name for p in simulated_providers()) == tuple(REGISTRY)


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_the_simulator_serves_the_routes_the_facts_give(kind: str) -> None:
    spec = REGISTRY[kind]
    (provider,) = (p for p in simulated_providers() if p.name == kind)
    served = {(r.method, r.path): r.action for r in provider.routes}
    expected = {
        (route.method, urlsplit(route.path).path): Action.VOID for route in (spec.void, *spec.other_voids)
    }
    if spec.lookup is not None:
        expected[(spec.lookup.method, spec.lookup.path)] = Action.LOOKUP
    if spec.oauth is not None:  # its token endpoint, at the documented URL's path
        expected[("POST", urlsplit(spec.oauth.token_url).path)] = Action.TOKEN
    assert served == expected


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_the_adapter_sends_its_void_to_the_route_the_facts_give(kind: str) -> None:
    spec = REGISTRY[kind]
    profile = builtin().profiles[kind]
    adapter = profile.adapter(dict.fromkeys(spec.credentials.values(), "x"), token=_Token())
    item = Item(1, kind, "inv_1", "2024-01-31", "cmp_1", "shop")
    params = {**profile.options, "invoice_id": "inv_1", "company_id": "cmp_1"}
    base_url = spec.default_base_url or "http://127.0.0.1"
    if spec.requests_per_item > 1:  # the void needs what its documented read gives (a SyncToken)
        assert spec.lookup is not None
        read = adapter.read_request(item)
        assert read is not None
        assert (read.method, read.url) == (spec.lookup.method, spec.lookup.url(base_url, **params))
        told = adapter.parse_read(item, Response(200, {}, _QUICKBOOKS_INVOICE))
        assert isinstance(told, Item)
        item = told
    request = adapter.void_request(item, "bv1-key")
    voids = {(route.method, route.url(base_url, **params)) for route in (spec.void, *spec.other_voids)}
    url, _, query = request.url.partition("&") if "?" in spec.void.path else (request.url, "", "")
    assert (request.method, url) in voids
    if spec.idempotency is not None and spec.idempotency.in_query:  # derived from the key: see its adapter
        assert parse_qs(query)[spec.idempotency.header][0].startswith("bv1-")
    elif spec.idempotency is not None:
        assert request.headers[spec.idempotency.header] == "bv1-key"
    else:
        assert "bv1-key" not in request.headers.values()


@dataclass(frozen=True)
class _Token:
    access_token: str = "at"
    secrets: tuple[str, ...] = ("at",)


_QUICKBOOKS_INVOICE = b'{"Invoice": {"Id": "inv_1", "SyncToken": "0", "TotalAmt": 5, "Balance": 5}}'


def test_a_route_encodes_every_parameter_as_one_segment() -> None:
    route = Route("POST", "/a/{company_id}/b/{invoice_id}/void")
    assert route.params == ("company_id", "invoice_id")
    assert (
        route.url("https://x", company_id="c/1", invoice_id="../i?d") == "https://x/a/c%2F1/b/..%2Fi%3Fd/void"
    )


def test_the_readme_provider_table_is_the_registry() -> None:
    text = README.read_text(encoding="utf-8")
    shown = text.split("<!-- providers: generated from the registry", 1)[1].split("-->\n", 1)[1]
    assert shown.split("\n<!-- /providers -->", 1)[0] == catalog.markdown_table()


def test_a_row_fields_prefix_is_checked_in_the_config_and_the_job_file(tmp_path: Path) -> None:
    """Maple's `cmp_` rule lives in its facts; config and job file both apply it from there."""
    (company,) = REGISTRY["maple"].row_fields
    assert company.prefix == "cmp_"
    config = tmp_path / "c.toml"
    config.write_text('[providers.m]\ntype = "maple"\ncompany_id = "acme"\n')
    with pytest.raises(ConfigError, match="company_id must start with 'cmp_'"):
        load(config)
    config.write_text('[providers.m]\ntype = "maple"\n')
    jobs = tmp_path / "j.csv"
    jobs.write_text("provider,invoice_id,company_id\nm,inv_1,acme\nm,inv_2,\nm,inv_3,cmp_9\n")
    got = list(read(jobs, load(config).profiles))
    assert isinstance(got[0], RowError)
    assert isinstance(got[1], RowError)
    assert "must start with 'cmp_'" in got[0].message
    assert "no company_id" in got[1].message
    assert isinstance(got[2], Item)
    assert got[2].company_id == "cmp_9"


def test_a_state_error_that_may_mean_already_void_is_read_or_fails_saying_it_could_not_be_confirmed() -> None:
    """With a documented read the engine is asked to read the invoice; without one, the outcome
    is a failure in the provider's words that says why it was not confirmed."""
    rapyd = REGISTRY["rapyd"]
    answer = Response(400, {}, b"{}")
    asked = maybe_already_void(rapyd, answer, "HTTP 400: ERROR_VOID_NOT_UNCOLLECTIBLE_OR_OPEN_INVOICE")
    assert asked.kind is OutcomeKind.REJECTED
    assert asked.check_status
    assert settled(rapyd, asked, "void").kind is OutcomeKind.ALREADY_VOID
    paid = settled(rapyd, asked, "paid")
    assert paid.kind is OutcomeKind.REJECTED
    assert not paid.check_status
    assert paid.reason.endswith("(invoice status: paid)")
    unread = maybe_already_void(replace(rapyd, lookup=None), answer, "HTTP 400: not open")
    assert unread.kind is OutcomeKind.REJECTED
    assert not unread.check_status
    assert unread.reason.startswith("HTTP 400: not open; it may be void already, but Rapyd documents no read")


def test_the_readme_names_every_provider_and_its_idempotency_header_in_words() -> None:
    """The opening paragraph names each provider of the registry, and the paragraph on
    idempotency keys each one's header, or says it has none."""
    text = README.read_text(encoding="utf-8")
    opening = text.split("\n\n", 2)[1]
    keys = text.split("Idempotency keys are `bv1-`", 1)[1].split("\n\n", 1)[0]
    for spec in REGISTRY.values():
        assert spec.title in " ".join(opening.split()), spec.title
        if spec.idempotency is None:
            assert spec.title in keys.split("have no idempotency header")[0].rsplit(".", 1)[-1], spec.title
        else:
            assert f"`{spec.idempotency.header}`" in keys, spec.title
