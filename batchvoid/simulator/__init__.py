"""A stand-in for all five billing providers on one local port, with injectable faults.

```python
async with Simulator(SimulatorSettings.from_specs(["rapyd:rate_limit=5/1s"])).serve() as url:
    ...  # point providers' base URLs at `url`, authenticate with CREDENTIALS
```
"""

from __future__ import annotations

from batchvoid.simulator.credentials import CREDENTIALS, PROVIDER_TYPES
from batchvoid.simulator.server import Simulator, serve_forever
from batchvoid.simulator.settings import Faults, SimulatorSettings

__all__ = [
    "CREDENTIALS",
    "PROVIDER_TYPES",
    "Faults",
    "Simulator",
    "SimulatorSettings",
    "serve_forever",
]
