"""The simulated providers, holding the simulator's credentials; one line each."""

from __future__ import annotations

from batchvoid.simulator.credentials import ACCOUNTS, CREDENTIALS
from batchvoid.simulator.providers.base import Provider, Route
from batchvoid.simulator.providers.campfire import Campfire
from batchvoid.simulator.providers.chargeover import ChargeOver
from batchvoid.simulator.providers.maple import Maple
from batchvoid.simulator.providers.quickbooks import QuickBooks
from batchvoid.simulator.providers.rapyd import Rapyd
from batchvoid.simulator.providers.sellapp import SellApp
from batchvoid.simulator.providers.xero import Xero


def simulated_providers() -> tuple[Provider, ...]:
    """One simulated provider per provider type, in `PROVIDER_TYPES` order."""
    return (
        ChargeOver(**CREDENTIALS["chargeover"]),
        Rapyd(**CREDENTIALS["rapyd"]),
        Campfire(**CREDENTIALS["campfire"]),
        Maple(**CREDENTIALS["maple"]),
        SellApp(**CREDENTIALS["sellapp"]),
        Xero(**CREDENTIALS["xero"], **ACCOUNTS["xero"]),
        QuickBooks(
            CREDENTIALS["quickbooks"]["client_id"],
            CREDENTIALS["quickbooks"]["client_secret"],
            ACCOUNTS["quickbooks"]["realm_id"],
        ),
    )


__all__ = ["Provider", "Route", "simulated_providers"]
