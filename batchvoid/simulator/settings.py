"""What the simulator is told to do: per-provider faults, the seed and the time scale.

Fault specs come from the command line as `[PROVIDER:]key=value[,key=value...]`; a spec
without a provider applies to all of them. Later specs override earlier ones field by field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from batchvoid.models import RateLimit
from batchvoid.simulator.credentials import PROVIDER_TYPES

RETRY_AFTER_FORMS = ("none", "seconds", "date")
MAX_CLOCK_SKEW_S = 315_576_000  # ten years of seconds: a Date header and a timestamp still fit

_RATE_LIMIT = re.compile(r"(?P<count>\d+)/(?P<period>\d+(?:\.\d*)?|\.\d+)?(?P<unit>[sm])")
_RATE_LIMIT_FORMS = "N/Ts, N/s or N/m, e.g. 50/1s, 200/60s, 10/s, 100/m"
_SPEC_FORM = "[PROVIDER:]key=value[,key=value...]"
_REDIRECT = re.compile(r"(https?://[^\s/]+|/)[^\s]*")


def parse_rate_limit(text: str) -> tuple[int, float]:
    """`"50/1s"` -> `(50, 1.0)`: at most N requests in any sliding window of T seconds."""
    match = _RATE_LIMIT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"rate_limit must look like {_RATE_LIMIT_FORMS}, got {text!r}")
    count = match["count"].lstrip("0") or "0"
    period = float(match["period"] or 1) * (60 if match["unit"] == "m" else 1)
    if count == "0" or period <= 0:
        raise ValueError(f"rate_limit needs N >= 1 and T > 0, got {text[:40]!r}")
    if problem := RateLimit.problem(count, period):
        raise ValueError(f"rate_limit {text[:40]!r}: {problem}")
    return int(count), period


@dataclass(frozen=True, slots=True)
class Faults:
    """One provider's injected faults; every field defaults to off.

    error/reset (before the void) happen in front of the app, like a gateway: nothing is
    applied or stored for idempotency. timeout (and the other half of resets) apply the
    void first. `rate_limit` is "N/Ts", "N/s" or "N/m": N accepted per sliding T seconds.
    `retry_after` is "none", "seconds" or "date". `rapyd_windows` is Rapyd's documented
    200/min and 1000/5 min rule (rapyd only). After `revoke_after` accepted voids the
    credential is revoked.

    Misbehaving providers: `echo_credentials` makes every 401 quote the credential the request
    presented (and an OAuth 2.0 token endpoint's refusal quote the refresh token and client
    credentials); `echo_headers` makes injected errors a gateway's 502/503 HTML page that lists the
    request's headers. `clock_skew_s` sets the simulator's clock that many seconds ahead (its
    `Date` header and Rapyd's timestamp check). `redirect_to` answers every request with a
    301 to that URL, in front of everything else.

    OAuth 2.0 providers (xero, quickbooks): `token_lifetime_s` is how long an access token lasts
    (default: the documented 30 or 60 minutes), so a test goes through many in seconds;
    `refresh_grace_s` how long a used refresh token still works (default 0; Xero's is 1800).
    `stale_rate` is the share of QuickBooks voids that find the invoice changed since it was read
    (code 5010), as when a payment lands in between.
    """

    latency_ms: float = 0
    jitter_ms: float = 0
    error_rate: float = 0
    timeout_rate: float = 0
    reset_rate: float = 0
    rate_limit: str | None = None
    retry_after: str = "none"
    rapyd_windows: bool = False
    revoke_after: int | None = None
    echo_credentials: bool = False
    echo_headers: bool = False
    clock_skew_s: float = 0
    redirect_to: str | None = None
    token_lifetime_s: float | None = None
    refresh_grace_s: float = 0
    stale_rate: float = 0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of milliseconds >= 0, got {value!r}")
        for name in ("error_rate", "timeout_rate", "reset_rate", "stale_rate"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be a fraction from 0 to 1, got {value!r}")
        if self.rate_limit is not None:
            parse_rate_limit(self.rate_limit)
        if self.retry_after not in RETRY_AFTER_FORMS:
            raise ValueError(
                f"retry_after must be one of {', '.join(RETRY_AFTER_FORMS)}, got {self.retry_after!r}"
            )
        if self.revoke_after is not None and self.revoke_after < 0:
            raise ValueError(f"revoke_after must be a count >= 0, got {self.revoke_after!r}")
        if self.token_lifetime_s is not None and not (
            math.isfinite(self.token_lifetime_s) and self.token_lifetime_s > 0
        ):
            raise ValueError(
                f"token_lifetime_s must be a number of seconds > 0, got {self.token_lifetime_s!r}"
            )
        if not (math.isfinite(self.refresh_grace_s) and self.refresh_grace_s >= 0):
            raise ValueError(
                f"refresh_grace_s must be a number of seconds >= 0, got {self.refresh_grace_s!r}"
            )
        if not abs(self.clock_skew_s) <= MAX_CLOCK_SKEW_S:  # (NaN fails too)
            raise ValueError(
                f"clock_skew_s must be a number of seconds from -{MAX_CLOCK_SKEW_S} to {MAX_CLOCK_SKEW_S} "
                f"(ten years either way), got {self.clock_skew_s!r}"
            )
        if self.redirect_to is not None and not _REDIRECT.fullmatch(self.redirect_to):
            raise ValueError(f"redirect_to must be an http(s) URL or a /path, got {self.redirect_to!r}")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parse_or_none(text: str) -> object:
        return None if text.lower() == "none" else parse(text)

    return parse_or_none


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return lowered == "true"


# Field name -> (parser of the CLI text, what the user may write).
_FIELD_PARSERS: Mapping[str, tuple[Callable[[str], object], str]] = MappingProxyType(
    {
        "latency_ms": (_number, "milliseconds >= 0"),
        "jitter_ms": (_number, "milliseconds >= 0"),
        "error_rate": (_number, "a fraction from 0 to 1"),
        "timeout_rate": (_number, "a fraction from 0 to 1"),
        "reset_rate": (_number, "a fraction from 0 to 1"),
        "rate_limit": (_optional(str), f"{_RATE_LIMIT_FORMS}, or none"),
        "retry_after": (str, " | ".join(RETRY_AFTER_FORMS)),
        "rapyd_windows": (_boolean, "true | false"),
        "revoke_after": (_optional(int), "a count >= 0, or none"),
        "echo_credentials": (_boolean, "true | false"),
        "echo_headers": (_boolean, "true | false"),
        "clock_skew_s": (_number, "seconds, negative for behind"),
        "redirect_to": (_optional(str), "an http(s) URL or a /path, or none"),
        "token_lifetime_s": (_optional(_number), "seconds > 0, or none (the documented lifetime)"),
        "refresh_grace_s": (_number, "seconds >= 0"),
        "stale_rate": (_number, "a fraction from 0 to 1"),
    }
)
_FIELD_NAMES = ", ".join(sorted(_FIELD_PARSERS))


def _parse_spec(spec: str) -> tuple[tuple[str, ...], dict[str, object]]:
    """One CLI fault spec -> (the providers it names, its field values)."""

    def bad(problem: str) -> ValueError:
        shown = repr(spec) if len(spec) <= 80 else f"{spec[:76]!r}..."
        return ValueError(f"fault spec {shown}: {problem}")

    head, colon, tail = spec.partition(":")
    if colon and "=" not in head:
        provider = head.strip()
        if provider not in PROVIDER_TYPES:
            raise bad(f"unknown provider {provider!r} (allowed: {', '.join(PROVIDER_TYPES)})")
        providers: tuple[str, ...] = (provider,)
        assignments = tail
    else:
        providers = PROVIDER_TYPES
        assignments = spec
    if not assignments.strip():
        raise bad(f"no settings (expected {_SPEC_FORM}; keys: {_FIELD_NAMES})")
    values: dict[str, object] = {}
    for assignment in assignments.split(","):
        key, equals, text = (part.strip() for part in assignment.partition("="))
        if not equals or not key:
            raise bad(f"expected key=value, got {assignment.strip()!r} (keys: {_FIELD_NAMES})")
        if key not in _FIELD_PARSERS:
            raise bad(f"unknown key {key!r} (allowed: {_FIELD_NAMES})")
        parse, allowed = _FIELD_PARSERS[key]
        try:
            values[key] = parse(text)
        except ValueError:
            raise bad(f"bad value {text!r} for {key} (allowed: {allowed})") from None
    if values.get("rapyd_windows") and len(providers) == 1 and providers[0] != "rapyd":
        raise bad("rapyd_windows applies only to rapyd (allowed: rapyd:rapyd_windows=true)")
    try:
        Faults(**values)  # type: ignore[arg-type]  # values are parsed per field above
    except ValueError as exc:
        raise bad(f"{exc} (allowed keys: {_FIELD_NAMES})") from None
    return providers, values


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """Everything a simulator run is configured with; nothing here changes while it runs."""

    faults: Mapping[str, Faults] = field(default_factory=lambda: MappingProxyType({}))
    seed: int | None = None
    time_scale: float = 1.0
    hang_s: float = 30.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faults) - set(PROVIDER_TYPES))
        if unknown:
            raise ValueError(
                f"faults for unknown provider types {', '.join(unknown)} "
                f"(allowed: {', '.join(PROVIDER_TYPES)})"
            )
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError(f"time_scale must be a number > 0, got {self.time_scale!r}")
        if not (math.isfinite(self.hang_s) and self.hang_s >= 0):
            raise ValueError(f"hang_s must be a number of seconds >= 0, got {self.hang_s!r}")
        # Frozen means frozen: a caller's dict must not change the settings behind our back.
        object.__setattr__(self, "faults", MappingProxyType(dict(self.faults)))

    def faults_for(self, provider_type: str) -> Faults:
        """The faults configured for one provider type; none configured means all off."""
        return self.faults.get(provider_type) or Faults()

    @classmethod
    def from_specs(
        cls, specs: Sequence[str], *, seed: int | None = None, time_scale: float = 1.0
    ) -> SimulatorSettings:
        """Settings from CLI fault specs; raises `ValueError` naming the bad spec and why."""
        fields: dict[str, dict[str, object]] = {}
        for spec in specs:
            providers, values = _parse_spec(spec)
            for provider in providers:
                chosen = fields.setdefault(provider, {})
                chosen.update(values)
                if provider != "rapyd":
                    chosen.pop("rapyd_windows", None)
        faults = {
            provider: Faults(**values)  # type: ignore[arg-type]  # parsed per field
            for provider, values in fields.items()
        }
        return cls(faults=faults, seed=seed, time_scale=time_scale)
