"""A stand-in for every billing provider batchvoid knows on one local port, with injectable faults.

```python
async with Simulator(SimulatorSettings.from_specs(["rapyd:rate_limit=5/1s"])).serve() as url:
    ...  # point providers' base URLs at `url`, authenticate with CREDENTIALS
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from batchvoid.simulator.credentials import CREDENTIALS, PROVIDER_TYPES
from batchvoid.simulator.settings import Faults, SimulatorSettings

if TYPE_CHECKING:
    from batchvoid.simulator.server import Simulator, serve_forever

__all__ = [
    "CREDENTIALS",
    "PROVIDER_TYPES",
    "Faults",
    "Simulator",
    "SimulatorSettings",
    "serve_forever",
]


def __getattr__(name: str) -> Any:
    """The server (aiohttp.web and the simulated providers) loads on first use, not with the CLI."""
    if name in ("Simulator", "serve_forever"):
        from batchvoid.simulator import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
