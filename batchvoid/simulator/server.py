"""The simulator's HTTP server: every provider on one port, plus `/_sim/` controls.

Handlers stay lean for benchmarks: no access log, no per-request logging, O(1) work.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
from aiohttp import web

from batchvoid.heap import steady_heap
from batchvoid.simulator.credentials import PROVIDER_TYPES, provider_url
from batchvoid.simulator.exchange import Action, Answer, Incoming
from batchvoid.simulator.faults import Fault
from batchvoid.simulator.invoices import InvoiceBook, InvoiceKey
from batchvoid.simulator.lane import Lane
from batchvoid.simulator.providers import simulated_providers
from batchvoid.simulator.providers.campfire import NOT_FOUND_BODY as CAMPFIRE_NOT_FOUND
from batchvoid.simulator.settings import SimulatorSettings
from batchvoid.simulator.stats import report_all

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# In-flight handlers get this long to finish on shutdown; hanging ones are woken first.
_SHUTDOWN_GRACE_S = 1.0
# Set on shutdown to wake handlers sleeping out latency or a timeout fault.
_CLOSING = web.AppKey("closing", asyncio.Event)
_TRUE = frozenset({"1", "true", "yes"})


class Simulator:
    """Stands in for every provider at its real paths, with state, auth and injected faults.

    Inspect it in-process: `void_requests` counts the requests the invoice logic saw,
    `voids_applied` the times an invoice went from voidable to void (0 or 1 each),
    `arrivals` the `time.monotonic()` of every provider request before any check,
    `peak_in_flight` the most requests each provider had in hand at once.
    """

    def __init__(self, settings: SimulatorSettings | None = None) -> None:
        self._settings = settings if settings is not None else SimulatorSettings()
        providers = simulated_providers()
        self._book = InvoiceBook(p.name for p in providers if p.has_drafts)
        self.void_requests: Counter[InvoiceKey] = self._book.void_requests
        self.voids_applied: Counter[InvoiceKey] = self._book.voids_applied
        self.arrivals: dict[str, list[float]] = {name: [] for name in PROVIDER_TYPES}
        # The most requests each provider had in hand at once (Maxio takes at most 4 per site).
        self.peak_in_flight: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._lanes: dict[str, Lane] = {
            p.name: Lane(
                p,
                self._settings.faults_for(p.name),
                book=self._book,
                seed=self._settings.seed,
                time_scale=self._settings.time_scale,
            )
            for p in providers
        }
        self._app = self._build_app()

    @property
    def app(self) -> web.Application:
        """The aiohttp application; `serve()` runs it, or run it with your own runner."""
        return self._app

    @property
    def settings(self) -> SimulatorSettings:
        """What this simulator was configured with."""
        return self._settings

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Listen on `host:port` (0: any free port) and yield the base URL, until exit."""
        if self._app.frozen:  # it ran before, maybe on another event loop: state is ours
            self._app = self._build_app()
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_GRACE_S
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            yield _base_url(runner.addresses[0])
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()

    def stats(self) -> dict[str, Any]:
        """Per provider type: requests, voided, already_void, rejected, not_found,
        auth_failed, throttled, redirected, lookups, faults {error, timeout, reset},
        idempotent_replays; and `"totals"` over all of them."""
        return report_all({name: lane.counts for name, lane in self._lanes.items()})

    def revoke(self, provider_type: str) -> None:
        """Revoke the provider's credential: every later request gets its 401."""
        self._lane(provider_type).revoke()

    def access_token(self, provider_type: str) -> str:
        """A valid access token of an OAuth 2.0 provider's connection, issued without a request
        (for tests that drive its API directly)."""
        issuer = self._lane(provider_type).issuer
        if issuer is None:
            raise ValueError(f"{provider_type} is not an OAuth 2.0 provider")
        return issuer.issue(time.time())

    def refresh_token(self, provider_type: str) -> str:
        """The refresh token an OAuth 2.0 provider's connection takes now (the last one issued)."""
        issuer = self._lane(provider_type).issuer
        if issuer is None:
            raise ValueError(f"{provider_type} is not an OAuth 2.0 provider")
        return issuer.current_refresh_token()

    def restore(self, provider_type: str) -> None:
        """Make a revoked credential good again."""
        self._lane(provider_type).restore()

    def invoice_state(self, provider_type: str, invoice_id: str) -> str:
        """`"open"`, `"paid"`, `"void"`, `"draft"` or `"missing"`."""
        self._lane(provider_type)
        return self._book.state(provider_type, invoice_id).value

    def reset(self) -> None:
        """Forget every invoice, counter, arrival, stored replay, limit and revocation."""
        self._book.clear()
        for arrivals in self.arrivals.values():
            arrivals.clear()
        self.peak_in_flight.clear()
        for lane in self._lanes.values():
            lane.reset()

    def _lane(self, provider_type: str) -> Lane:
        try:
            return self._lanes[provider_type]
        except KeyError:
            raise ValueError(
                f"unknown provider type {provider_type!r} (known: {', '.join(PROVIDER_TYPES)})"
            ) from None

    # The HTTP side.

    def _build_app(self) -> web.Application:
        app = web.Application()
        taken: set[tuple[str, str]] = set()
        for lane in self._lanes.values():
            for route in lane.provider.routes:
                handler = self._handler(lane, route.action)
                app.router.add_route(route.method, provider_url("", lane.name) + route.path, handler)
                if (route.method, route.path) not in taken:  # also unprefixed, for its first claimant
                    taken.add((route.method, route.path))
                    app.router.add_route(route.method, route.path, handler)
        app.router.add_get("/_sim/stats", self._get_stats)
        app.router.add_post("/_sim/revoke", self._post_revoke)
        app.router.add_post("/_sim/restore", self._post_restore)
        app.router.add_post("/_sim/reset", self._post_reset)
        app.router.add_route("*", "/{tail:.*}", _not_found)  # last: anything else is a 404
        app.on_startup.append(_on_startup)
        app.on_shutdown.append(_on_shutdown)
        return app

    def _handler(self, lane: Lane, action: Action) -> Handler:
        arrivals = self.arrivals[lane.name]
        in_flight, peak, name = self._in_flight, self.peak_in_flight, lane.name

        counted = action is not Action.TOKEN  # a token endpoint is another host, with no API limits

        async def handle(request: web.Request) -> web.StreamResponse:
            now = time.monotonic()
            arrivals.append(now)
            in_flight[name] += counted
            peak[name] = max(peak[name], in_flight[name])
            try:
                incoming = Incoming(
                    method=request.method,
                    raw_path=request.raw_path,
                    headers=request.headers,
                    params=request.match_info,
                    body=await request.read(),
                    wall=time.time(),
                )
                decision = lane.decide(action, incoming, now, in_flight[name])
                delay = lane.dice.delay_s()
                if decision.fault is Fault.TIMEOUT:
                    delay += self._settings.hang_s * self._settings.time_scale
                if delay > 0:
                    await _pause(request.app, delay)
                if decision.answer is None:
                    _drop_connection(request)
                    return web.Response(status=500)  # never sent: the transport is gone
                return _response(decision.answer)
            except Exception as exc:  # a simulator bug: a 500 that says so, not a traceback on the terminal
                return web.Response(status=500, text=f"simulator error: {exc!r}")
            finally:
                in_flight[name] -= counted

        return handle

    async def _get_stats(self, request: web.Request) -> web.Response:
        payload = self.stats()
        if request.query.get("invoices", "").lower() in _TRUE:
            payload["void_requests"] = _by_invoice(self.void_requests)
            payload["voids_applied"] = _by_invoice(self.voids_applied)
        return web.json_response(payload)

    async def _post_revoke(self, request: web.Request) -> web.Response:
        return self._control(request, revoked=True)

    async def _post_restore(self, request: web.Request) -> web.Response:
        return self._control(request, revoked=False)

    def _control(self, request: web.Request, *, revoked: bool) -> web.Response:
        provider_type = request.query.get("provider", "")
        try:
            (self.revoke if revoked else self.restore)(provider_type)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"provider": provider_type, "revoked": revoked})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


async def serve_forever(
    host: str,
    port: int,
    settings: SimulatorSettings,
    *,
    ready: Callable[[str], None] | None = None,
    until: Sequence[signal.Signals] = (),
) -> None:
    """Run a simulator on `host:port` until cancelled or one of the signals `until` arrives;
    `ready(base_url)` once listening.

    The signals are the event loop's to handle, never a KeyboardInterrupt raised wherever one
    lands: uvloop 0.19 now and then lost that one inside a callback, and the simulator ran on."""
    with anyio.open_signal_receiver(*until) as received:
        async with Simulator(settings).serve(host, port) as base_url:
            with steady_heap():  # the simulator as it starts is its start-up heap too
                if ready is not None:
                    ready(base_url)
                if not until:
                    await anyio.sleep_forever()
                async for _ in received:
                    return


async def _on_startup(app: web.Application) -> None:
    app[_CLOSING] = asyncio.Event()


async def _on_shutdown(app: web.Application) -> None:
    closing = app.get(_CLOSING)
    if closing is not None:
        closing.set()


async def _pause(app: web.Application, seconds: float) -> None:
    """Sleep `seconds`, or less if the server is shutting down."""
    closing = app.get(_CLOSING)
    if closing is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await closing.wait()


def _response(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status,
        body=answer.body,
        content_type=answer.content_type,
        headers=answer.headers or None,
    )


def _drop_connection(request: web.Request) -> None:
    """Reset the connection: RST, no answer, as a crashed server or a flaky network would."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns close into an immediate RST instead of an orderly FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _not_found(request: web.Request) -> web.Response:
    if request.path.startswith("/coa/"):  # Campfire's Django answers its own 404
        return web.Response(status=404, body=CAMPFIRE_NOT_FOUND, content_type="application/json")
    return web.json_response(
        {"error": "not_found", "message": f"no route for {request.method} {request.path}"},
        status=404,
    )


def _by_invoice(counts: Mapping[InvoiceKey, int]) -> dict[str, int]:
    return {f"{provider}:{invoice_id}": n for (provider, invoice_id), n in counts.items()}


def _base_url(address: Any) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
