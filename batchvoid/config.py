"""Reads the TOML configuration: provider profiles, their limits and where their secrets live.

Credentials are never in the file: each profile names, per credential, the environment
variable, the file or the command that holds it (see `credentials`), and they are read only
for the profiles a job uses, right before the run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shlex
import tomllib
import unicodedata
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batchvoid.credentials import KINDS, Credential, Reader, command_argv, reader
from batchvoid.errors import ConfigError, os_cause
from batchvoid.models import RateLimit
from batchvoid.network import is_loopback, tls_context
from batchvoid.oauth import AccessToken, OAuthSettings, RefreshTokenFile
from batchvoid.providers import REGISTRY, Adapter, ProviderSpec
from batchvoid.simulator.credentials import ACCOUNTS, provider_url
from batchvoid.suggest import did_you_mean

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|m|min|h)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Settings:
    """Per-profile run settings; `[defaults]` sets them for all, a profile overrides."""

    timeout_s: float = 30.0
    max_attempts: int = 5
    concurrency: int = 4
    stop_after_rejections: int = 25  # stop the lane after this many rejections in a row; 0: never
    max_pause_s: float = 900.0  # a longer Retry-After stops the lane for the run
    give_up_throttled_after_s: float = 1800.0  # only 429s for this long stop the lane for the run


# key -> (type check, description for the error message)
_SETTINGS: dict[str, tuple[type, str, float, float]] = {
    "timeout_s": (float, "a number of seconds from 0.001 to 3600", 0.001, 3600),
    "max_attempts": (int, "a whole number from 1 to 100", 1, 100),
    "concurrency": (int, "a whole number from 1 to 512", 1, 512),
    "stop_after_rejections": (int, "a whole number from 0 (never) to 1000000", 0, 1_000_000),
    "max_pause_s": (float, "a number of seconds from 1 to 86400", 1, 86400),
    "give_up_throttled_after_s": (float, "a number of seconds from 1 to 86400", 1, 86400),
}


@dataclass(frozen=True, slots=True)
class Profile:
    """One provider account, by the name a job file's provider column uses."""

    name: str
    spec: ProviderSpec
    base_url: str
    credentials: Mapping[str, Credential]  # role ("access_key") -> where its value comes from
    options: Mapping[str, str]
    rate_limits: tuple[RateLimit, ...]
    settings: Settings
    ca_bundle: str | None = None  # PEM file of the CAs its https:// certificate is checked against
    source: str = field(default="", compare=False)  # "config/x.toml: [providers.name]"
    oauth: OAuthSettings | None = None  # an OAuth 2.0 provider's connection; file "": a rehearsal's

    def secrets(self, source: Mapping[str, str] | Reader, notices: list[str] | None = None) -> dict[str, str]:
        """The credential values by role, read from `source` (a mapping: the environment).

        Wherever a value comes from (a variable, a file, a command), the whitespace around it is
        trimmed, and a missing or empty one, or one with a control character inside, is an error
        naming the source and the key, never the value. Each trimmed one adds a line to `notices`.
        """
        read = reader(source)
        values: dict[str, str] = {}
        for role, credential in self.credentials.items():
            raw = read.read(credential, self.source)
            value = raw.strip(_AROUND)
            if not value:
                raise ConfigError(credential.missing(self.source))
            if (bad := _control_character(value)) is not None:
                raise ConfigError(
                    f"{self.source}: {credential.describe()} ({credential.key}) has {bad} inside its "
                    f"value, which no credential has: {credential.fix()} (the value is not shown)"
                )
            if value != raw and notices is not None:
                notice = (
                    f"{credential.describe()} has whitespace around its value "
                    f"({credential.why_trimmed()}): using it trimmed"
                )
                if notice not in notices:
                    notices.append(notice)
            values[role] = value
        if self.oauth is not None and self.oauth.refresh_token_file:
            RefreshTokenFile(self.oauth.refresh_token_file).check(self.source)
        return values

    def default_void_date(self, at: dt.datetime) -> str | None:
        """The void date for this profile's rows that give none, fixed at `at`; None: it takes none."""
        if "void_date" not in self.spec.options:
            return None
        chosen = self.options.get("void_date", "today")
        if chosen != "today":
            return chosen
        return at.astimezone(zoneinfo.ZoneInfo(self.options.get("timezone", "UTC"))).date().isoformat()

    def adapter(
        self,
        source: Mapping[str, str] | Reader,
        notices: list[str] | None = None,
        token: AccessToken | None = None,
    ) -> Adapter:
        """The adapter for this profile, with its credentials read from `source` (see `secrets`);
        an OAuth 2.0 provider's carries `token`, its connection's current access token."""
        if self.spec.connect is not None:
            if token is None:
                raise ValueError(f"{self.source}: an OAuth 2.0 profile's adapter needs its connection")
            return self.spec.connect(self.base_url, token, self.options)
        return self.spec.build(self.base_url, self.secrets(source, notices), self.options)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: provider profiles by name."""

    path: str
    profiles: Mapping[str, Profile]

    def fingerprint(self) -> str:
        """Changes when a profile would send to a different account or place; not on limits."""
        identity = sorted(
            (p.name, p.spec.type, p.base_url, sorted(p.options.items())) for p in self.profiles.values()
        )
        return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]

    def pointed_at(self, base_url: str) -> Config:
        """The same profiles, every one sending to the simulator at `base_url` (its own part), an
        OAuth 2.0 connection's refreshes too."""
        profiles = {}
        for name, p in self.profiles.items():
            url = provider_url(base_url, p.spec.type)
            facts = p.spec.oauth  # the simulator serves the documented endpoint, not a configured one
            oauth = (
                None
                if p.oauth is None or facts is None
                else replace(p.oauth, token_url=url + _path(facts.token_url))
            )
            profiles[name] = replace(p, base_url=url, oauth=oauth)
        return replace(self, profiles=profiles)

    def rehearsal(self) -> Config:
        """The same profiles with every credential from an environment variable, for the simulator.

        A `*_file` or `*_command` credential becomes the variable BATCHVOID_SIM_<TYPE>_<ROLE>: a
        rehearsal reads no secret file and runs no password manager. An OAuth 2.0 connection's
        refresh token stays in memory, where the rehearsal's simulator issued it: a rehearsal
        never reads or rotates the real connection's refresh token file.
        """
        profiles = {
            name: replace(
                p,
                credentials={
                    role: c
                    if c.kind == "env"
                    else Credential(role, "env", f"BATCHVOID_SIM_{p.spec.type.upper()}_{role.upper()}")
                    for role, c in p.credentials.items()
                },
                oauth=None if p.oauth is None else replace(p.oauth, refresh_token_file=""),
            )
            for name, p in self.profiles.items()
        }
        return replace(self, profiles=profiles)


# What a file or a copy-paste leaves around a value: line ends, spaces, a byte-order mark.
_AROUND = " \t\r\n\v\f\u00a0\u2028\u2029\ufeff"
_CHARACTER_NAMES = {"\t": "a tab", "\n": "a line feed", "\r": "a carriage return"}


def _control_character(value: str) -> str | None:
    """What the first control or invisible formatting character in `value` is, or None."""
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            name = _CHARACTER_NAMES.get(char, "a control character")
            return f"{name} (U+{ord(char):04X})"
    return None


def _path(url: str) -> str:
    """The path of `url` (a token endpoint's, for the simulator that serves it)."""
    return urlsplit(url).path


def parse_rate_limit(text: object) -> RateLimit:
    """'200/60s', '5/s', '1000/5m' -> RateLimit; raises ValueError with what is accepted."""
    match = _RATE.match(text) if isinstance(text, str) else None
    shown = repr(text) if len(repr(text)) <= 40 else f"{repr(text)[:36]}..."
    if match is None or not isinstance(text, str):
        raise ValueError(
            f"{shown} is not a rate limit: write COUNT/PERIOD, like '200/60s', '5/s' or '1000/5m'"
        )
    count, period = match[1].lstrip("0") or "0", float(match[2] or 1) * _UNITS[match[3]]
    if count == "0" or period <= 0:
        raise ValueError(f"{shown}: the count and the period must both be above zero")
    if problem := RateLimit.problem(count, period):
        raise ValueError(f"{shown}: {problem}")
    return RateLimit(int(count), period, text.strip())


def load(path: str | Path) -> Config:
    """Read and check a configuration file; every problem names the file and the key."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such configuration file (`batchvoid config init {shlex.quote(str(path))}` "
            "writes a commented one to start from)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory: name the configuration file (TOML) inside it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text: save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(data, source=str(path), base_dir=path.parent)


def example() -> str:
    """The commented example configuration, as installed with the package."""
    return resources.files("batchvoid").joinpath("examples", "providers.example.toml").read_text("utf-8")


def write_example(path: Path, *, force: bool = False) -> None:
    """Write `example()` to `path`; an existing file only with `force`."""
    try:
        with path.open("w" if force else "x", encoding="utf-8") as f:
            f.write(example())
    except FileExistsError:
        raise ConfigError(
            f"{path} exists already: edit it, check it with `batchvoid config check --config "
            f"{shlex.quote(str(path))}`, or pass --force to replace it with the example"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory: name the file to write") from None
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: its directory {path.parent} does not exist: create it "
            f"(mkdir -p {shlex.quote(str(path.parent))}) or name a file in an existing one"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write it: {os_cause(exc)}") from exc


def from_dict(data: Mapping[str, Any], *, source: str, base_dir: Path | None = None) -> Config:
    """Build a Config from parsed TOML; `source` names the file in error messages.

    A relative `*_file` path is taken from `base_dir` (the configuration file's directory).
    """
    _unknown(data, {"defaults", "providers"}, f"{source}: top level")
    defaults_table = _table(data, "defaults", source)
    defaults = _settings(defaults_table, Settings(), f"{source}: [defaults]")
    default_ca = _ca_bundle(defaults_table, None, f"{source}: [defaults]", base_dir)
    providers = _table(data, "providers", source)
    if not providers:
        raise ConfigError(f"{source}: no [providers.NAME] table: configure at least one provider")
    profiles = {}
    for name, table in providers.items():
        where = f"{source}: [providers.{name}]"
        if not _NAME.match(name):
            raise ConfigError(f"{where}: a provider name is letters, digits, '_', '.', '-' (at most 64)")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: must be a table of settings")
        profiles[name] = _profile(name, table, defaults, default_ca, where, base_dir)
    return Config(source, profiles)


def builtin() -> Config:
    """One profile per provider type, named after it, at its example limits: for --simulate."""
    profiles = {
        spec.type: Profile(
            name=spec.type,
            spec=spec,
            base_url=spec.default_base_url or "http://127.0.0.1",
            credentials={
                key.removesuffix("_env"): Credential(key.removesuffix("_env"), "env", var)
                for key, var in spec.credentials.items()
            },
            options={
                **{f.name: f"{f.prefix or ''}simulated" for f in spec.row_fields if f.required},
                **ACCOUNTS.get(spec.type, {}),
            },
            rate_limits=tuple(parse_rate_limit(r) for r in spec.example_limits),
            settings=Settings(),
            source=f"built-in simulator configuration: [providers.{spec.type}]",
            oauth=None if spec.oauth is None else OAuthSettings("", spec.oauth.token_url),
        )
        for spec in REGISTRY.values()
    }
    return Config("built-in simulator configuration", profiles)


def _profile(
    name: str,
    table: dict[str, Any],
    defaults: Settings,
    default_ca: str | None,
    where: str,
    base_dir: Path | None,
) -> Profile:
    kind = table.get("type")
    if not isinstance(kind, str) or kind not in REGISTRY:
        known = ", ".join(REGISTRY)
        shown = "missing" if kind is None else repr(kind)
        raise ConfigError(f"{where}: type is {shown}; it must be one of: {known}")
    spec = REGISTRY[kind]
    roles = [key.removesuffix("_env") for key in spec.credentials]
    for role in roles:
        if role in table:  # the value itself, maybe: it is never shown
            raise ConfigError(
                f"{where}: {role}: a credential is never written in the configuration file. Say where "
                f"it lives: {role}_env (an environment variable), {role}_file (a file, such as a "
                f"mounted secret) or {role}_command (a command that prints it, such as a password manager)"
            )
    allowed = {
        "type",
        "base_url",
        "allow_insecure_http",
        "rate_limits",
        "ca_bundle",
        *(("region",) if spec.regions else ()),
        *(f"{role}_{source}" for role in roles for source in KINDS),
        *spec.options,
        *_SETTINGS,
        *(("refresh_token_file", "token_url") if spec.oauth is not None else ()),
    }
    _unknown(table, allowed, where)

    base_url = _region_url(spec, table, where) or table.get("base_url", spec.default_base_url)
    if base_url is None:
        form = f": {spec.account_url}" if spec.account_url else ""
        raise ConfigError(f"{where}: base_url is required for {spec.title} (each account has its own{form})")
    insecure = table.get("allow_insecure_http", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"{where}: allow_insecure_http must be true or false, got {insecure!r}")
    _check_base_url(base_url, insecure, where)
    _check_base_path(spec, base_url, where)

    credentials = {
        key.removesuffix("_env"): _credential(key.removesuffix("_env"), default, table, where, base_dir)
        for key, default in spec.credentials.items()
    }

    options = {}
    for key in spec.options:
        if key in table:
            value = table[key]
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{where}: {key} must be a non-empty string")
            if (bad := _control_character(value.strip())) is not None:  # it goes into a header or path
                raise ConfigError(f"{where}: {key} has {bad} in it, got {value!r}")
            options[key] = value.strip()
    for key in spec.required_options:
        if key not in options:
            raise ConfigError(f"{where}: {key} is required for {spec.title}: {spec.options[key]}")
    for row_field in spec.row_fields:
        value = options.get(row_field.name)
        if value is not None and row_field.prefix is not None and not value.startswith(row_field.prefix):
            raise ConfigError(
                f"{where}: {row_field.name} must start with {row_field.prefix!r}, got {value!r}"
            )
        if value is not None and row_field.choices and value.lower() not in row_field.choices:
            raise ConfigError(
                f"{where}: {row_field.name} must be {' or '.join(row_field.choices)}, got {value!r}"
            )
        if value is not None and row_field.max_length is not None and len(value) > row_field.max_length:
            raise ConfigError(
                f"{where}: {row_field.name} is {len(value)} characters long; {spec.title} takes at most "
                f"{row_field.max_length}"
            )
    _check_void_date(options, where)

    raw_limits = table.get("rate_limits", list(spec.example_limits))
    if not isinstance(raw_limits, list):
        raise ConfigError(f'{where}: rate_limits must be a list of strings, like ["200/60s"]')
    try:
        limits = tuple(parse_rate_limit(r) for r in raw_limits)
    except ValueError as exc:
        raise ConfigError(f"{where}: rate_limits: {exc}") from None

    return Profile(
        name=name,
        spec=spec,
        base_url=base_url.rstrip("/"),
        credentials=credentials,
        options=options,
        rate_limits=limits,
        settings=_in_flight(spec, _settings(table, defaults, where), "concurrency" in table, where),
        ca_bundle=_ca_bundle(table, default_ca, where, base_dir),
        source=where,
        oauth=_oauth(spec, table, insecure, where, base_dir),
    )


def _oauth(
    spec: ProviderSpec, table: Mapping[str, Any], insecure: bool, where: str, base_dir: Path | None
) -> OAuthSettings | None:
    """An OAuth 2.0 profile's connection: its refresh token file (required) and token endpoint."""
    if spec.oauth is None:
        return None
    value = table.get("refresh_token_file")
    if value is None:
        raise ConfigError(
            f"{where}: refresh_token_file is required for {spec.title}: the file where batchvoid keeps "
            "the connection's refresh token, which it replaces on every refresh (README: 'Authorising "
            "Xero and QuickBooks' says how to get the first one)"
        )
    if not isinstance(value, str) or not value.strip() or _control_character(value) is not None:
        raise ConfigError(f"{where}: refresh_token_file must be the path of a file, on one line")
    path = Path(value.strip()).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    token_url = table.get("token_url", spec.oauth.token_url)
    _check_base_url(token_url, insecure, where, "token_url")
    return OAuthSettings(str(path.absolute()), str(token_url))


def _region_url(spec: ProviderSpec, table: Mapping[str, Any], where: str) -> str | None:
    """The base URL of the profile's `region`, if it names one of the provider's (see ProviderSpec)."""
    if "region" not in table:
        return None
    region, known = table["region"], ", ".join(repr(name) for name in spec.regions)
    if "base_url" in table:
        raise ConfigError(
            f"{where}: base_url and region both say where {spec.title} is: keep region for one of "
            f"{spec.title}'s own ({known}), or base_url for any other (a self-hosted one)"
        )
    if region not in spec.regions:
        raise ConfigError(
            f"{where}: region must be one of {known}, got {region!r}; for a self-hosted "
            f"{spec.title}, set base_url instead"
        )
    return spec.regions[region]


def _credential(
    role: str, default: str, table: Mapping[str, Any], where: str, base_dir: Path | None
) -> Credential:
    """Where a role's value comes from: its one `*_env`, `*_file` or `*_command` key, else the default."""
    given = [kind for kind in KINDS if f"{role}_{kind}" in table]
    if len(given) > 1:
        keys = " and ".join(f"{role}_{kind}" for kind in given)
        raise ConfigError(f"{where}: {keys} both say where {role} comes from: keep exactly one")
    kind = given[0] if given else "env"
    key = f"{role}_{kind}"
    value = table.get(key, default)
    if kind == "env":
        if not isinstance(value, str) or not _ENV_NAME.match(value):
            raise ConfigError(f"{where}: {key} must name an environment variable, like {default!r}")
        return Credential(role, kind, value)
    what = "the path of the file that holds it" if kind == "file" else "a command line that prints it"
    if not isinstance(value, str) or not value.strip() or _control_character(value) is not None:
        raise ConfigError(f"{where}: {key} must be {what}, on one line")
    if kind == "file":
        path = Path(value.strip()).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return Credential(role, kind, str(path))
    try:
        command_argv(value)
    except ValueError as exc:
        raise ConfigError(
            f"{where}: {key} cannot be split into a command and its arguments ({exc})"
        ) from None
    return Credential(role, kind, value.strip())


def _ca_bundle(
    table: Mapping[str, Any], default: str | None, where: str, base_dir: Path | None
) -> str | None:
    """The table's ca_bundle (else `default`), checked now: a file that is there and holds PEM CAs.

    A relative path is from `base_dir` (the configuration file's directory), as a `*_file` one is.
    """
    if "ca_bundle" not in table:
        return default
    value = table["ca_bundle"]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: ca_bundle must be the path of a PEM file of CA certificates")
    path = Path(value.strip()).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    tls_context(str(path), where)
    return str(path)


def _check_void_date(options: Mapping[str, str], where: str) -> None:
    void_date, zone = options.get("void_date"), options.get("timezone")
    if void_date is not None and void_date != "today":
        try:
            ok = len(void_date) == 10 and dt.date.fromisoformat(void_date) is not None
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(
                f"{where}: void_date must be 'today' or a real date as YYYY-MM-DD, got {void_date!r}"
            )
    if zone is not None:
        try:
            zoneinfo.ZoneInfo(zone)
        except (ValueError, zoneinfo.ZoneInfoNotFoundError):
            raise ConfigError(
                f"{where}: timezone {zone!r} is not a known time zone: use an IANA name like "
                "'UTC', 'Europe/London' or 'America/New_York'"
            ) from None


def _check_base_url(base_url: object, insecure: bool, where: str, key: str = "base_url") -> None:
    """A base URL is http(s)://host[:port][/path], with no user or password, and https:// unless
    it is this machine (loopback) or the profile says allow_insecure_http."""
    if isinstance(base_url, str) and "@" in base_url:  # checked first: the password is never shown
        scheme = base_url.partition("://")[0].lower()
        scheme = scheme if scheme in ("http", "https") else "https"  # anything else may be the user
        after = base_url.rpartition("@")[2]
        raise ConfigError(
            f"{where}: {key} must not carry a user or password ({scheme}://...@{after}): credentials "
            f"come only from the environment variables the profile names; write {scheme}://{after}"
        )
    bad = f"{where}: {key} must be an http:// or https:// URL, got {base_url!r}"
    if not isinstance(base_url, str) or not re.match(r"^https?://[^\s/]+", base_url):
        raise ConfigError(bad)
    try:
        parts = urlsplit(base_url)
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise ConfigError(f"{bad}: its host or port cannot be read") from None
    if not host or any(char.isspace() or unicodedata.category(char) == "Cc" for char in base_url):
        raise ConfigError(bad)
    if parts.scheme == "http" and not insecure and not is_loopback(host):
        raise ConfigError(
            f"{where}: {key} {base_url!r} is plain http:// to {host}, so the credentials would travel "
            "in clear text: use https://, or, if every network in between is yours, set "
            "allow_insecure_http = true in this profile"
        )


def _check_base_path(spec: ProviderSpec, base_url: str, where: str) -> None:
    """A base URL copied from the provider's docs with its `api_prefix` (Lago's `/api/v1`) would
    double it in every request: each void would answer 404."""
    prefix = spec.api_prefix
    if prefix and urlsplit(base_url).path.rstrip("/").endswith(prefix):
        host = base_url.rstrip("/").removesuffix(prefix)
        raise ConfigError(
            f"{where}: base_url ends with {prefix}, which batchvoid adds itself to every {spec.title} "
            f"request ({spec.void.method} {spec.void.path}): write base_url = {host!r}"
        )


def _in_flight(spec: ProviderSpec, settings: Settings, own: bool, where: str) -> Settings:
    """The settings with concurrency within the provider's documented most in flight: a profile's
    own concurrency above it is an error, the [defaults] one is lowered to it."""
    most = spec.max_in_flight
    if most is None or settings.concurrency <= most:
        return settings
    if own:
        raise ConfigError(
            f"{where}: concurrency = {settings.concurrency}, but {spec.title} takes at most {most} "
            f"requests in flight per account (it queues, slows and then refuses more): set "
            f"concurrency to {most} or less"
        )
    return replace(settings, concurrency=most)


def _settings(table: Mapping[str, Any], base: Settings, where: str) -> Settings:
    values: dict[str, Any] = {}
    for key, (kind, what, low, high) in _SETTINGS.items():
        if key not in table:
            continue
        value = table[key]
        ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
        if isinstance(value, bool) or not ok_type or not low <= value <= high:
            raise ConfigError(f"{where}: {key} must be {what}, got {value!r}")
        values[key] = kind(value)
    if where.endswith("[defaults]"):
        _unknown(table, {*_SETTINGS, "ca_bundle"}, where)
    return replace(base, **values)


def _table(data: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{key}] must be a table")
    return value


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
                + did_you_mean(key, allowed)
            )
