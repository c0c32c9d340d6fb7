"""The simulator's fixed test credentials: one account per provider type."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

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
    }
)
