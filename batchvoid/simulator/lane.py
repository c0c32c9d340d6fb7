"""One provider's lane through the simulator: the checks every request passes, in order.

arrival -> redirect -> credential (revoked?) -> rate limits -> injected faults -> the
provider's app (idempotency replay, then the invoice logic). Sans-IO: the server sleeps and
drops connections as the decision says. The lane's clock is the arrival's wall time plus
`clock_skew_s`: the invoice logic, Rapyd's timestamp check and the `Date` header all read it.
"""

from __future__ import annotations

import email.utils
import html
import math
import random
from collections import Counter
from dataclasses import dataclass, fields, replace

from batchvoid.providers import REGISTRY
from batchvoid.simulator.credentials import REFRESH_TOKENS
from batchvoid.simulator.exchange import Action, Answer, Incoming
from batchvoid.simulator.faults import Fault, FaultDice
from batchvoid.simulator.idempotency import IdempotencyStore
from batchvoid.simulator.invoices import InvoiceBook
from batchvoid.simulator.oauth import BAD_GRANT, TokenIssuer
from batchvoid.simulator.providers import Provider
from batchvoid.simulator.ratelimit import (
    Limit,
    SlidingWindow,
    Throttle,
    rapyd_windows,
    whole_seconds,
)
from batchvoid.simulator.settings import Faults, parse_rate_limit
from batchvoid.simulator.stats import Tally


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one request: send `answer` (None: drop the connection)."""

    answer: Answer | None
    fault: Fault | None = None


def _throttle(faults: Faults, *, rapyd: bool, time_scale: float) -> Throttle | None:
    limits: list[Limit] = []
    if faults.rate_limit is not None:
        count, period = parse_rate_limit(faults.rate_limit)
        limits.append(SlidingWindow(count, period * time_scale))
    if rapyd and faults.rapyd_windows:
        limits.extend(rapyd_windows(time_scale))
    return Throttle(limits) if limits else None


class Lane:
    """One provider type's credential, limits, fault dice, stored replays and counters."""

    __slots__ = (
        "_accepted",
        "_book",
        "_faults",
        "_replays",
        "_seed",
        "_throttle",
        "_time_scale",
        "counts",
        "dice",
        "issuer",
        "max_in_flight",
        "provider",
        "revoked",
    )

    def __init__(
        self,
        provider: Provider,
        faults: Faults,
        *,
        book: InvoiceBook,
        seed: int | None,
        time_scale: float,
    ) -> None:
        if "stale_rate" in {f.name for f in fields(provider)}:  # type: ignore[arg-type]
            provider = replace(provider, stale_rate=faults.stale_rate, seed=seed)  # type: ignore[type-var]
        self.provider = provider
        # An OAuth 2.0 provider's token endpoint, and the tokens its API takes.
        self.issuer: TokenIssuer | None = None
        if provider.name in REFRESH_TOKENS:
            self.issuer = TokenIssuer(
                getattr(provider, "client_id"),  # noqa: B009 - only OAuth providers have one
                getattr(provider, "client_secret"),  # noqa: B009
                REFRESH_TOKENS[provider.name],
                prefix=getattr(provider, "token_prefix"),  # noqa: B009
                lifetime_s=faults.token_lifetime_s or getattr(provider, "token_lifetime_s"),  # noqa: B009
                grace_s=faults.refresh_grace_s,
            )
        self.counts: Counter[Tally] = Counter()
        # The most API requests it takes at once, as documented: one more is answered 429.
        self.max_in_flight = REGISTRY[provider.name].max_in_flight
        self._faults = faults
        self._book = book
        self._seed = seed
        self._time_scale = time_scale
        self.reset()

    @property
    def name(self) -> str:
        return self.provider.name

    def reset(self) -> None:
        """Back to the state of a fresh simulator: counters, limits, dice, replays, credential."""
        self.counts.clear()
        self.dice = FaultDice(self._faults, random.Random(self._seed))
        self._throttle = _throttle(self._faults, rapyd=self.name == "rapyd", time_scale=self._time_scale)
        self._replays = IdempotencyStore()
        if self.issuer is not None:
            self.issuer.reset()
        if hasattr(self.provider, "reset"):
            self.provider.reset()
        self.restore()

    def revoke(self) -> None:
        self.revoked = True

    def restore(self) -> None:
        """Lift a revocation; `revoke_after` counts accepted voids again from zero."""
        self._accepted = 0
        self.revoked = self._faults.revoke_after == 0

    def decide(self, action: Action, incoming: Incoming, now: float, in_flight: int = 1) -> Decision:
        """Run one request through the checks; `now` is its `time.monotonic()` arrival, and
        `in_flight` the provider's API requests in hand with it."""
        skew = self._faults.clock_skew_s
        if not skew:
            return self._decide(action, incoming, now, in_flight)
        incoming = replace(incoming, wall=incoming.wall + skew)
        decision = self._decide(action, incoming, now, in_flight)
        if decision.answer is None:
            return decision
        date = email.utils.formatdate(incoming.wall, usegmt=True)
        return Decision(decision.answer.with_headers({"Date": date}), decision.fault)

    def _decide(self, action: Action, incoming: Incoming, now: float, in_flight: int) -> Decision:
        counts, provider, faults = self.counts, self.provider, self._faults
        counts[Tally.REQUESTS] += 1
        if faults.redirect_to is not None:
            counts[Tally.REDIRECTED] += 1
            return Decision(_redirect(faults.redirect_to))
        issuer = self.issuer
        if issuer is not None and action is Action.TOKEN:  # the token endpoint: another host, no API limits
            if not self.revoked:
                answer = issuer.refresh(incoming, incoming.wall)
            else:
                answer = issuer.refused_echoing(incoming) if faults.echo_credentials else BAD_GRANT
            counts[answer.tally] += 1
            return Decision(answer)
        if self.revoked or (issuer is not None and not issuer.valid(_bearer(incoming), incoming.wall)):
            denied: Answer | None = provider.unauthorized()
        else:
            denied = provider.authenticate(incoming)
        if denied is not None:
            if faults.echo_credentials and denied.status == 401:
                denied = provider.unauthorized_echoing(incoming)
            counts[denied.tally] += 1
            return Decision(denied)
        if self.max_in_flight is not None and in_flight > self.max_in_flight:
            counts[Tally.THROTTLED] += 1  # the documented cap on requests at once (Maxio, Xero, QuickBooks)
            return Decision(self._throttled(_CONCURRENCY_WAIT_S, incoming.wall))
        if self._throttle is not None:
            wait = self._throttle.admit(now)
            if wait > 0:
                counts[Tally.THROTTLED] += 1
                return Decision(self._throttled(wait, incoming.wall))
        if action is Action.VOID and faults.revoke_after is not None:
            self._accepted += 1
            if self._accepted >= faults.revoke_after:
                self.revoked = True
        fault = self.dice.roll()
        if fault is Fault.ERROR:
            counts[Tally.FAULT_ERROR] += 1
            status = self.dice.error_status()
            if faults.echo_headers:
                return Decision(_gateway_page(status, incoming), fault)
            return Decision(provider.server_error(status), fault)
        if fault is Fault.RESET:
            counts[Tally.FAULT_RESET] += 1
            return Decision(None, fault)
        answer = provider.answer(action, incoming, self._book, self._replays)
        counts[answer.tally] += 1
        if fault is Fault.TIMEOUT:
            counts[Tally.FAULT_TIMEOUT] += 1
        elif fault is Fault.RESET_AFTER_APPLY:
            counts[Tally.FAULT_RESET] += 1
            return Decision(None, fault)
        return Decision(answer, fault)

    def _throttled(self, wait: float, wall: float) -> Answer:
        answer = self.provider.throttled(wait)
        match self._faults.retry_after:
            case "seconds":
                return answer.with_headers({"Retry-After": str(whole_seconds(wait))})
            case "date":
                retry_at = email.utils.formatdate(math.ceil(wall + wait), usegmt=True)
                return answer.with_headers({"Retry-After": retry_at})
            case _:
                return answer


def _bearer(incoming: Incoming) -> str:
    scheme, _, token = incoming.headers.get("Authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" else ""


_CONCURRENCY_WAIT_S = 1.0  # what a 429 for too many requests at once says to wait
_GATEWAY_REASONS = {502: "Bad Gateway", 503: "Service Unavailable"}


def _gateway_page(status: int, incoming: Incoming) -> Answer:
    """A debugging gateway's error page: the request line and every header, as it got them."""
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Server Error')}"
    lines = [f"{incoming.method} {incoming.raw_path}"]
    lines += [f"{name}: {value}" for name, value in incoming.headers.items()]
    request = html.escape("\n".join(lines), quote=False)
    page = f"<html><body><h1>{title}</h1><pre>{request}</pre><hr>simulated gateway</body></html>"
    return Answer(status, page.encode(), Tally.FAULT_ERROR, "text/html")


def _redirect(location: str) -> Answer:
    link = f'<a href="{html.escape(location)}">here</a>'
    body = f"<html><body><h1>301 Moved Permanently</h1>{link}</body></html>"
    return Answer(301, body.encode(), Tally.REDIRECTED, "text/html", {"Location": location})
