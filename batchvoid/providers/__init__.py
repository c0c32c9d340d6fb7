"""The provider registry: one module per provider, one line here to make it known."""

from __future__ import annotations

from batchvoid.providers import (
    campfire,
    chargebee,
    chargeover,
    lago,
    maple,
    maxio,
    quickbooks,
    rapyd,
    recurly,
    sellapp,
    stripe,
    xero,
)
from batchvoid.providers.base import Adapter
from batchvoid.providers.facts import ProviderSpec

REGISTRY: dict[str, ProviderSpec] = {
    spec.type: spec
    for spec in (
        chargeover.SPEC,
        rapyd.SPEC,
        campfire.SPEC,
        maple.SPEC,
        sellapp.SPEC,
        stripe.SPEC,
        recurly.SPEC,
        maxio.SPEC,
        chargebee.SPEC,
        lago.SPEC,
        xero.SPEC,
        quickbooks.SPEC,
    )
}

__all__ = ["REGISTRY", "Adapter", "ProviderSpec"]
