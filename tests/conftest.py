"""Shared fixtures: the anyio backend, a loopback simulator, and a run helper."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from batchvoid import config as configuration
from batchvoid.config import Config


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def profiles() -> Config:
    """The built-in configuration: one profile per provider type, named after it."""
    return configuration.builtin()


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Any, str]]:
    """A fault-free simulator on a loopback port, with its base URL."""
    from batchvoid.simulator import Simulator, SimulatorSettings

    simulator = Simulator(SimulatorSettings())
    async with simulator.serve() as base_url:
        yield simulator, base_url


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
