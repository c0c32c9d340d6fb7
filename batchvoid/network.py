"""How requests reach a provider: through the environment's proxy or not, trusting which CAs.

Proxies come from `HTTPS_PROXY` / `HTTP_PROXY` (lower-case names first, as curl and urllib
read them) and `NO_PROXY`, chosen per base URL. This machine itself (`localhost`,
127.0.0.0/8, ::1: the simulator) is never reached through a proxy. aiohttp's own
`trust_env=True` is not used: it also sends `~/.netrc` logins as Basic auth to the hosts it
names, a credential from outside the profile, and proxies loopback traffic like any other.

TLS trusts the system's CA store, which OpenSSL reads from `SSL_CERT_FILE` / `SSL_CERT_DIR`
when they are set, or, for a profile with `ca_bundle`, that PEM file alone.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from batchvoid.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Route:
    """How requests to one base URL travel: the proxy (None: direct) and the TLS trust."""

    proxy: str | None = None  # scheme://host:port, never with credentials: safe to show
    variable: str = ""  # the environment variable that named the proxy
    proxy_user: str = field(default="", repr=False)
    proxy_password: str = field(default="", repr=False)
    tls: ssl.SSLContext | None = None  # None: the transport's default (the system's CA store)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The proxy's credentials, for the transport to scrub out of whatever comes back."""
        if not (self.proxy_user or self.proxy_password):
            return ()  # the usual route (asked twice per request): no generator to make
        return tuple(value for value in (self.proxy_user, self.proxy_password) if value)

    @property
    def proxy_authorization(self) -> str:
        """The Proxy-Authorization header for the proxy's user and password (Basic)."""
        pair = f"{self.proxy_user}:{self.proxy_password}".encode()
        return "Basic " + base64.b64encode(pair).decode()


DIRECT = Route()


def route(
    base_url: str,
    *,
    tls: ssl.SSLContext | None = None,
    env: Mapping[str, str] | None = None,
) -> Route:
    """The route for `base_url`: its proxy from `env` (default: the process environment), and
    `tls` (from `tls_context`) when it is https://.

    Raises ConfigError for a proxy variable that cannot be used, never showing its credentials.
    """
    env = os.environ if env is None else env
    parts = urlsplit(base_url)
    tls = tls if parts.scheme == "https" else None
    proxy = proxy_for(base_url, env)
    if proxy is None:
        return Route(tls=tls)
    variable, value = proxy
    address, user, password = _split_proxy(variable, value)
    return Route(address, variable, user, password, tls)


def proxy_for(base_url: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable, value) of the proxy `env` names for `base_url`, or None: go direct."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if is_loopback(host):
        return None
    found = _proxies(env)
    if parts.scheme not in found:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if "no" in found and bypassed(host, port, found["no"][1]):
        return None
    return found[parts.scheme]


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether NO_PROXY keeps `host` off the proxy, as curl reads it: `*`, or a comma-separated list
    of host names (each also covering its subdomains; a leading dot is the same), IP addresses,
    CIDR ranges, each optionally with :port."""
    host = host.lower().rstrip(".")
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if entry == "*":
            return True
        name, only_port = _entry(entry)
        if not name or (only_port is not None and only_port != port):
            continue
        if host == name or host.endswith("." + name) or _in_network(host, name):
            return True
    return False


def _entry(entry: str) -> tuple[str, int | None]:
    """A NO_PROXY entry's host (or range) and port: `host`, `host:port`, `[v6]:port`, a bare v6."""
    if entry.startswith("["):
        name, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        name, _, port = entry.partition(":")
    else:
        name, port = entry, ""
    return name.lstrip(".").rstrip("."), int(port) if port.isdigit() else None


def _in_network(host: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _proxies(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """scheme ('http', 'https', 'no') -> (variable, value); a lower-case variable wins, as in urllib."""
    found: dict[str, tuple[str, str]] = {}
    for lower_only in (False, True):
        for name, value in env.items():
            if not name.lower().endswith("_proxy") or (lower_only and not name.islower()):
                continue
            scheme = name.lower().removesuffix("_proxy")
            if value.strip():
                found[scheme] = (name, value.strip())
            elif lower_only:  # an empty lower-case variable turns the upper-case one off
                found.pop(scheme, None)
    return found


def _split_proxy(variable: str, value: str) -> tuple[str, str, str]:
    """(scheme://host:port, user, password) of a proxy URL; ConfigError without its credentials."""
    text = value if "://" in value else f"http://{value}"  # curl's reading of a bare host:port
    shown = shown_url(text)
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if parts.scheme != "http" or not host:
        raise ConfigError(
            f"environment variable {variable} is {shown}, which is not a proxy batchvoid can use: "
            "write http://host:port (an http:// proxy; requests to https:// providers go through "
            "it encrypted, by CONNECT), or unset it"
        )
    address = f"http://{f'[{host}]' if ':' in host else host}:{port or 80}"
    return address, unquote(parts.username or ""), unquote(parts.password or "")


def shown_url(url: str) -> str:
    """`url` without any user or password in it: what may be printed or logged."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "...@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}" if sep else authority + slash + path


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_context(ca_bundle: str | None, where: str = "") -> ssl.SSLContext:
    """The TLS context that verifies a provider: against `ca_bundle` alone, else the system's store.

    A bundle that cannot be used is a ConfigError naming `where`, the key and the file.
    """
    if ca_bundle is None:
        return ssl.create_default_context()  # OpenSSL reads SSL_CERT_FILE / SSL_CERT_DIR here
    prefix = f"{where}: ca_bundle " if where else "ca_bundle "
    try:
        with open(ca_bundle, "rb"):  # the plain OS error for a missing or unreadable file
            pass
        return ssl.create_default_context(cafile=ca_bundle)
    except IsADirectoryError:
        raise ConfigError(f"{prefix}{ca_bundle}: is a directory, not a PEM file of CA certificates") from None
    except ssl.SSLError:  # an OSError too: first
        raise ConfigError(
            f"{prefix}{ca_bundle}: holds no PEM certificate (-----BEGIN CERTIFICATE-----) that can be read"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{prefix}{ca_bundle}: cannot read it: {exc.strerror}") from None
