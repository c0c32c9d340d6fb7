"""The simulated providers, holding the simulator's credentials; one line each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from batchvoid.providers import REGISTRY
from batchvoid.simulator.credentials import ACCOUNTS, CREDENTIALS
from batchvoid.simulator.providers.base import Provider, Route
from batchvoid.simulator.providers.campfire import Campfire
from batchvoid.simulator.providers.chargebee import Chargebee
from batchvoid.simulator.providers.chargeover import ChargeOver
from batchvoid.simulator.providers.lago import Lago
from batchvoid.simulator.providers.maple import Maple
from batchvoid.simulator.providers.maxio import Maxio
from batchvoid.simulator.providers.quickbooks import QuickBooks
from batchvoid.simulator.providers.rapyd import Rapyd
from batchvoid.simulator.providers.recurly import Recurly
from batchvoid.simulator.providers.sellapp import SellApp
from batchvoid.simulator.providers.stripe import Stripe
from batchvoid.simulator.providers.xero import Xero

# Provider type -> its simulated twin, built from the account's credentials (role -> value)
# and, for an OAuth 2.0 provider, the account the connection reaches (ACCOUNTS).
SIMULATED: Mapping[str, Callable[..., Provider]] = MappingProxyType(
    {
        "chargeover": ChargeOver,
        "rapyd": Rapyd,
        "campfire": Campfire,
        "maple": Maple,
        "sellapp": SellApp,
        "stripe": Stripe,
        "recurly": Recurly,
        "maxio": Maxio,
        "chargebee": Chargebee,
        "lago": Lago,
        "xero": Xero,
        "quickbooks": QuickBooks,
    }
)


def simulated_providers() -> tuple[Provider, ...]:
    """One simulated provider per provider type, in registry (`PROVIDER_TYPES`) order."""
    return tuple(SIMULATED[kind](**CREDENTIALS[kind], **ACCOUNTS.get(kind, {})) for kind in REGISTRY)


__all__ = ["SIMULATED", "Provider", "Route", "simulated_providers"]
