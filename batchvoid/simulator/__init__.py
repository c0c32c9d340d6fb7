"""A stand-in for every billing provider batchvoid knows on one local port, with injectable faults.

```python
async with Simulator(SimulatorSettings.from_specs(["rapyd:rate_limit=5/1s"])).serve() as url:
    ...  # point each provider's base URL at provider_url(url, type), authenticate with CREDENTIALS
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchvoid.simulator.credentials import ACCOUNTS, CREDENTIALS, PROVIDER_TYPES, provider_url
from batchvoid.simulator.settings import Faults, SimulatorSettings

if TYPE_CHECKING:
    from batchvoid.simulator.server import Simulator, serve_forever

__all__ = [
    "ACCOUNTS",
    "CREDENTIALS",
    "PROVIDER_TYPES",
    "Faults",
    "Simulator",
    "SimulatorSettings",
    "provider_url",
    "serve_forever",
]


def __getattr__(name: str) -> Any:
    """The server (aiohttp.web and the simulated providers) loads on first use, not with the CLI."""
    if name in ("Simulator", "serve_forever"):
        from batchvoid.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
