"""batchvoid configuration files that point every provider at the benchmark's simulator."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from batchvoid.providers import REGISTRY
from bench.jobs import PROVIDERS

ENV_PREFIX = "BATCHVOID_SIM_"  # what `batchvoid simulate` prints its credentials as
COMPANY_ID = "cmp_bench"


def credential_var(provider: str, role: str) -> str:
    """The variable `batchvoid simulate` prints for one credential, e.g. BATCHVOID_SIM_RAPYD_SECRET_KEY."""
    return f"{ENV_PREFIX}{provider.upper()}_{role.upper()}"


def write_config(
    path: Path,
    base_url: str,
    *,
    concurrency: int,
    rate_limits: Sequence[str] = (),
    timeout_s: float = 30,
) -> Path:
    """A profile per provider type, named after it, all with the same limits and concurrency."""
    lines = ["[defaults]", f"timeout_s = {timeout_s}", f"concurrency = {concurrency}", ""]
    for provider in PROVIDERS:
        spec = REGISTRY[provider]
        lines += [f"[providers.{provider}]", f'type = "{provider}"', f"base_url = {json.dumps(base_url)}"]
        for key in spec.credentials:
            lines.append(f'{key} = "{credential_var(provider, key.removesuffix("_env"))}"')
        if "company_id" in spec.options:
            lines.append(f'company_id = "{COMPANY_ID}"')
        lines += [f"rate_limits = {json.dumps(list(rate_limits))}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
