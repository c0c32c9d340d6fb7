"""The simulator's fixed test credentials: one account per provider type."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from urllib.parse import urlsplit

from batchvoid.providers import REGISTRY

PROVIDER_TYPES = tuple(REGISTRY)


def provider_url(url: str, provider_type: str) -> str:
    """Where the simulator at `url` serves one provider: under its type, since two providers
    may document the same path (Rapyd's and Stripe's `/v1/invoices/{id}/void`)."""
    return f"{url}/{provider_type}"


CREDENTIALS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "chargeover": MappingProxyType({"username": "sim_co_public", "password": "sim_co_private"}),
        "rapyd": MappingProxyType({"access_key": "rak_SIMULATOR", "secret_key": "rsk_SIMULATOR"}),
        "campfire": MappingProxyType({"api_key": "sim_campfire_token"}),
        "maple": MappingProxyType({"api_token": "sim_maple_token"}),
        "sellapp": MappingProxyType({"api_key": "sim_sellapp_key"}),
        "stripe": MappingProxyType({"secret_key": "sk_test_SIMULATOR"}),
        "recurly": MappingProxyType({"api_key": "sim_recurly_private_key"}),
        "maxio": MappingProxyType({"api_key": "sim_maxio_api_key"}),
        "chargebee": MappingProxyType({"api_key": "test_cb_SIMULATOR"}),
        "lago": MappingProxyType({"api_key": "sim_lago_api_key"}),
        "xero": MappingProxyType({"client_id": "sim_xero_client", "client_secret": "sim_xero_secret"}),
        "quickbooks": MappingProxyType({"client_id": "sim_qbo_client", "client_secret": "sim_qbo_secret"}),
    }
)
# The refresh token each OAuth 2.0 provider's connection starts with (it rotates from there).
REFRESH_TOKENS: Mapping[str, str] = MappingProxyType(
    {"xero": "sim_xero_refresh_0", "quickbooks": "sim_qbo_refresh_0"}
)
# The account each of them is connected to: Xero's tenant, QuickBooks' realm (company).
ACCOUNTS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "xero": MappingProxyType({"tenant_id": "00000000-0000-4000-8000-00000000a11c"}),
        "quickbooks": MappingProxyType({"realm_id": "9130350000000001"}),
    }
)


def oauth_accounts(url: str) -> list[str]:
    """For a configuration of its own against the simulator at `url`: each OAuth 2.0 provider's
    first refresh token, account and token endpoint, as lines to show."""
    lines = []
    for kind, token in REFRESH_TOKENS.items():
        oauth = REGISTRY[kind].oauth
        assert oauth is not None
        token_url = provider_url(url, kind) + urlsplit(oauth.token_url).path
        account = ", ".join(f'{key} = "{value}"' for key, value in ACCOUNTS[kind].items())
        lines.append(
            f"{kind}: write {token} to the refresh_token_file (it rotates from there); {account}; "
            f'token_url = "{token_url}"; base_url = "{provider_url(url, kind)}"'
        )
    return lines
