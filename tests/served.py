"""A simulator served from a thread of its own, for CLI runs with a real configuration file.

`batchvoid run --simulate` replaces the credentials with the simulator's; these runs read
them from the environment, as a real run does, and the test can look at every request sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from batchvoid.providers import REGISTRY
from batchvoid.simulator import (
    ACCOUNTS,
    CREDENTIALS,
    PROVIDER_TYPES,
    Simulator,
    SimulatorSettings,
    provider_url,
)
from batchvoid.simulator.credentials import REFRESH_TOKENS

# The default credential variable of each provider's key roles, from the registry.
VARIABLES = {
    (kind, key.removesuffix("_env")): var
    for kind, spec in REGISTRY.items()
    for key, var in spec.credentials.items()
}
# The settings a profile must have for its rows to need no column (Maple's company_id), and
# the account an OAuth 2.0 connection reaches (Xero's tenant).
REQUIRED = {
    kind: "".join(f'{f.name} = "{f.prefix or ""}simulated"\n' for f in spec.row_fields if f.required)
    + "".join(f'{key} = "{value}"\n' for key, value in ACCOUNTS.get(kind, {}).items())
    for kind, spec in REGISTRY.items()
}


@dataclass
class Served:
    """A running simulator, its base URL, and the headers of every request it got, in order."""

    simulator: Simulator
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)

    def config(self, path: Path, *, defaults: str = "max_attempts = 1\nconcurrency = 1") -> str:
        """A configuration with every provider at this simulator, unlimited, default variables."""
        tables = "".join(
            f'\n[providers.{name}]\ntype = "{name}"\nbase_url = "{provider_url(self.url, name)}"\nrate_limits = []\n'
            + REQUIRED[name]
            + self._connection(path.parent, name)
            for name in PROVIDER_TYPES
        )
        path.write_text(f"[defaults]\n{defaults}\n{tables}", encoding="utf-8")
        return str(path)

    def _connection(self, directory: Path, name: str) -> str:
        """An OAuth 2.0 provider's refresh token file, at the simulator's current token, and
        its token endpoint: the keys that point the profile at them."""
        if REGISTRY[name].oauth is None:
            return ""
        tokens = directory / f"{name}.refresh-token"
        if not tokens.exists():  # a later run goes on from the token the last one saved
            tokens.write_text(REFRESH_TOKENS[name] + "\n", encoding="utf-8")
            tokens.chmod(0o600)
        token_url = provider_url(self.url, name) + urlsplit(REGISTRY[name].oauth.token_url).path
        return f'refresh_token_file = "{tokens}"\ntoken_url = "{token_url}"\n'


def set_credentials(monkeypatch: pytest.MonkeyPatch, **overrides: str) -> None:
    """Export the simulator's credentials under the default variables; `overrides` by variable."""
    for (provider, role), var in VARIABLES.items():
        monkeypatch.setenv(var, overrides.get(var, CREDENTIALS[provider][role]))


@contextlib.contextmanager
def served(settings: SimulatorSettings | None = None) -> Iterator[Served]:
    """Serve a simulator on a loopback port from another thread until the block ends."""
    simulator = Simulator(settings)
    requests: list[dict[str, str]] = []

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        requests.append(dict(request.headers))
        return await handler(request)

    simulator.app.middlewares.append(record)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    urls: list[str] = []

    async def serve() -> None:
        async with simulator.serve() as url:
            urls.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the simulator did not start"
        yield Served(simulator, urls[0], requests)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
