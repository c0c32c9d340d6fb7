"""`batchvoid providers`: every provider type batchvoid knows, and what its config needs.

Read from the provider registry, so it cannot drift from what the code accepts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from batchvoid.config import Settings
from batchvoid.credentials import COMMAND_TIMEOUT_S, KINDS
from batchvoid.providers import REGISTRY, ProviderSpec

COMMON_KEYS = {
    "type": "the provider type (below)",
    "base_url": "where its API is (required when there is no default); https://, no user:password@",
    "allow_insecure_http": "true lets base_url be http:// to another machine (keys in clear text)",
    "rate_limits": 'every window holds at once, e.g. ["200/60s", "1000/300s"]; [] means none',
    "ca_bundle": "PEM file of the CAs its https:// certificate is checked against (default: the "
    "system's, or SSL_CERT_FILE); also in [defaults]",
    "timeout_s": f"seconds per request (default {Settings().timeout_s:g})",
    "max_attempts": f"tries for a retryable failure per item per run (default {Settings().max_attempts})",
    "concurrency": f"requests in flight at once (default {Settings().concurrency})",
    "stop_after_rejections": "permanent failures in a row that stop the provider; 0: never "
    f"(default {Settings().stop_after_rejections})",
    "max_pause_s": "longest Retry-After waited out; a longer one stops the provider "
    f"(default {Settings().max_pause_s:g})",
    "give_up_throttled_after_s": "seconds of nothing but 429s that stop the provider "
    f"(default {Settings().give_up_throttled_after_s:g})",
}


# The keys of an OAuth 2.0 provider's profile (Xero, QuickBooks Online) beyond its options.
OAUTH_KEYS = {
    "refresh_token_file": "the file that holds the connection's refresh token (0600); batchvoid "
    "replaces it, atomically, on every refresh",
    "token_url": "the provider's token endpoint",
}


CREDENTIAL_SOURCES = (
    "Credentials never go in the file. For each one, give one of: *_env, the environment variable "
    "that holds it (the default below); *_file, a file that holds it (a mounted Kubernetes or Docker "
    "secret; one trailing newline trimmed; a relative path is from the configuration's directory); "
    f"*_command, a command that prints it (a password manager; run once per run, no shell, at most "
    f"{COMMAND_TIMEOUT_S:g} s, its output never shown)."
)


def _sources(spec: ProviderSpec) -> dict[str, list[str]]:
    """Each credential role's keys: role -> [role_env, role_file, role_command]."""
    roles = [key.removesuffix("_env") for key in spec.credentials]
    return {role: [f"{role}_{kind}" for kind in KINDS] for role in roles}


def describe(spec: ProviderSpec) -> dict[str, Any]:
    """One provider type as JSON-ready data."""
    return {
        "type": spec.type,
        "title": spec.title,
        "credentials": dict(spec.credentials),
        "credential_sources": _sources(spec),
        "options": dict(spec.options),
        "base_url": spec.default_base_url,
        "account_url": spec.account_url,
        "regions": dict(spec.regions),
        "documented_limits": list(spec.documented_limits),
        "default_limits": list(spec.example_limits),
        "limits_note": spec.limits_note,
        "idempotency_header": spec.idempotency_header,
        "idempotency_key_max_length": spec.idempotency and spec.idempotency.max_length,
        "void": f"{spec.void.method} {spec.void.path}",
        "other_voids": [f"{route.method} {route.path}" for route in spec.other_voids],
        "max_in_flight": spec.max_in_flight,
        "lookup": spec.lookup and f"{spec.lookup.method} {spec.lookup.path}",
        "row_fields": {f.name: f.meaning for f in spec.row_fields},
        "oauth": spec.oauth
        and {
            "keys": OAUTH_KEYS,
            "token_url": spec.oauth.token_url,
            "access_lifetime_s": spec.oauth.access_lifetime_s,
        },
    }


def catalog() -> dict[str, Any]:
    """Every provider type, and the keys every profile takes."""
    return {
        "common_keys": COMMON_KEYS,
        "credential_sources": CREDENTIAL_SOURCES,
        "providers": [describe(spec) for spec in REGISTRY.values()],
    }


def _keys(mapping: Mapping[str, str], *, default_word: str) -> list[str]:
    return [f"{key} ({default_word} {value})" for key, value in mapping.items()]


def _idempotency(spec: ProviderSpec) -> str:
    if spec.idempotency is None:
        return "none"
    said = [f"{spec.idempotency.header} {'query parameter' if spec.idempotency.in_query else 'header'}"]
    if spec.idempotency.max_length is not None:
        said.append(f"at most {spec.idempotency.max_length} characters")
    if spec.idempotency.note:
        said.append(spec.idempotency.note)
    return ", ".join(said)


def _idempotency_cell(spec: ProviderSpec) -> str:
    if spec.idempotency is None:
        return "none"
    return f"`{spec.idempotency.header}`" + (" (query)" if spec.idempotency.in_query else "")


def _oauth(spec: ProviderSpec) -> str:
    assert spec.oauth is not None
    return (
        f"refresh_token_file (required): {OAUTH_KEYS['refresh_token_file']}; token_url (default "
        f"{spec.oauth.token_url}); access tokens last {spec.oauth.access_lifetime_s / 60:g} minutes"
    )


def _base_url(spec: ProviderSpec) -> str:
    if spec.default_base_url is None:
        return "required: every account has its own" + (f" ({spec.account_url})" if spec.account_url else "")
    if not spec.regions:
        return spec.default_base_url
    regions = ", ".join(f"{name!r} {url}" for name, url in spec.regions.items())
    return f"{spec.default_base_url}; or region = one of {regions}; or base_url for any other"


def markdown_table() -> str:
    """The README's provider table, one row per registered provider."""
    rows = [
        "| type | provider | credential variables | void | idempotency | documented limits "
        "| example limits |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for spec in REGISTRY.values():
        cells = (
            f"`{spec.type}`",
            spec.title,
            ", ".join(f"`{var}`" for var in spec.credentials.values()),
            " or ".join(f"`{route.method} {route.path}`" for route in (spec.void, *spec.other_voids)),
            _idempotency_cell(spec),
            ", ".join(spec.documented_limits) or "none documented",
            ", ".join(spec.example_limits) or "none",
        )
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def text() -> str:
    """The catalog as plain text, for a terminal or a pager."""
    lines = ["Every [providers.NAME] table takes:"]
    width = max(map(len, COMMON_KEYS))
    lines += [f"  {key:<{width}}  {meaning}" for key, meaning in COMMON_KEYS.items()]
    lines += textwrap.wrap(CREDENTIAL_SOURCES, width=100)
    for spec in REGISTRY.values():
        lines += ["", f"{spec.type}: {spec.title}"]
        rows = [
            ("credentials", ", ".join(_keys(spec.credentials, default_word="default"))),
            ("or instead", ", ".join(k for keys in _sources(spec).values() for k in keys[1:])),
            ("other keys", "; ".join(f"{k}: {v}" for k, v in spec.options.items()) or "-"),
            ("base_url", _base_url(spec)),
            ("documented", ", ".join(spec.documented_limits) or "no rate limit documented"),
            ("default", f"{', '.join(spec.example_limits)}: {spec.limits_note}"),
            ("idempotency", _idempotency(spec)),
            ("void", " or ".join(f"{r.method} {r.path}" for r in (spec.void, *spec.other_voids))),
            *([("in flight", f"at most {spec.max_in_flight} (concurrency)")] if spec.max_in_flight else []),
            *([("read", f"{spec.lookup.method} {spec.lookup.path}")] if spec.lookup else []),
            ("row fields", "; ".join(f"{f.name}: {f.meaning}" for f in spec.row_fields) or "-"),
            *([("oauth", _oauth(spec))] if spec.oauth else []),
        ]
        lines += [f"  {name:<11}  {value}" for name, value in rows]
    return "\n".join(lines)
