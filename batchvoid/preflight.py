"""What `run` and `plan` share before anything is sent: the options, the configuration, the job.

`prepare` finds the job in the ledger or checks the job file and records it as a new job, and
refuses what must not run: a job file changed since the job began, a rehearsal's job in a
real run (or the other way round), a profile that now sends elsewhere than its items went,
a missing credential.
"""

from __future__ import annotations

import os
import shlex
import ssl
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

from batchvoid import config as configuration
from batchvoid import jobfile, locations
from batchvoid.config import Config, Profile
from batchvoid.consolelog import ConsoleLog
from batchvoid.credentials import Reader
from batchvoid.engine import FailureLimits, Retry
from batchvoid.errors import ConfigError, LedgerError, RunInterrupted
from batchvoid.ledger import Ingest, Job, Ledger, LedgerLocation, NewJob
from batchvoid.locations import DEFAULT_LEDGER, REHEARSAL_LEDGER
from batchvoid.models import ItemState
from batchvoid.network import Route, route, tls_context
from batchvoid.progress import ProgressOptions
from batchvoid.simulator.credentials import CREDENTIALS
from batchvoid.simulator.settings import SimulatorSettings

_CANCEL_EVERY = 1000  # rows between checks for a signal while recording a job file


@dataclass(frozen=True, slots=True)
class RunOptions:
    """What `batchvoid run` was asked to do."""

    job_file: Path
    config: Path | None = None
    ledger: LedgerLocation = DEFAULT_LEDGER
    job_id: str | None = None
    log_file: Path | None = None
    simulate: bool = False
    simulator: SimulatorSettings = field(default_factory=SimulatorSettings)
    retry: Retry = field(default_factory=Retry)
    failure_limits: FailureLimits = field(default_factory=FailureLimits)
    grace_s: float | None = None  # after a first signal; default: the longest request timeout
    retry_failed: bool = False  # put failed items back to pending first (redrive)
    allow_target_change: bool = False  # resume although a profile's base URL or account changed
    progress: ProgressOptions = field(default_factory=ProgressOptions)
    console: ConsoleLog = field(default_factory=ConsoleLog)  # which log lines reach stderr
    command: tuple[str, ...] = ()  # the command line, for the run's record; default: sys.argv
    limit: int | None = None  # a canary: send at most this many items in this run
    providers: tuple[str, ...] = ()  # send only to these profiles (empty: every one)
    max_workers: int | None = None  # PostgreSQL: refuse to join a job with this many live workers

    @property
    def job_name(self) -> str:
        """The job's name in the ledger: --job-id, or the job file's name."""
        return self.job_id or self.job_file.name


def load_config(options: RunOptions, env: Mapping[str, str] | None = None) -> Config:
    """The configuration file found as `locations` says; a rehearsal with none: the built-in one.

    `env` holds BATCHVOID_CONFIG (default: the process environment).
    """
    found = locations.find_config(options.config, os.environ if env is None else env)
    if found.path is not None:
        return configuration.load(found.path)
    if options.simulate:
        return configuration.builtin()
    raise ConfigError(
        f"no configuration: {locations.not_found(found)}; or pass --simulate to rehearse the job on "
        "the built-in simulator"
    )


def simulator_env(config: Config) -> dict[str, str]:
    """Each profile's credential variables, set to the simulator's test credentials.

    Credentials from files or commands have none: give `config.rehearsal()`.
    """
    env = {}
    for profile in config.profiles.values():
        for role, credential in profile.credentials.items():
            if credential.kind == "env":
                env[credential.name] = CREDENTIALS[profile.spec.type][role]
    return env


def routes(config: Config, names: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, Route]:
    """How each named profile's requests travel: proxy from `env` (default: the process's), TLS trust.

    Raises ConfigError for a proxy variable or a ca_bundle that cannot be used.
    """
    contexts: dict[str | None, ssl.SSLContext] = {}  # one TLS context per CA bundle: loading one takes ms
    chosen = {}
    for name in names:
        profile = config.profiles[name]
        tls = None
        if profile.base_url.startswith("https://"):
            if profile.ca_bundle not in contexts:
                contexts[profile.ca_bundle] = tls_context(profile.ca_bundle, profile.source)
            tls = contexts[profile.ca_bundle]
        chosen[name] = route(profile.base_url, tls=tls, env=env)
    return chosen


_NOT_ACCOUNT = frozenset({"void_date", "timezone"})  # options that say how to void, not where


def targets(config: Config) -> dict[str, str]:
    """Where each profile of `config` sends (see `target`)."""
    return {name: target(profile) for name, profile in config.profiles.items()}


def target(profile: Profile) -> str:
    """Where a profile sends: its type, base URL and account, as the ledger records it."""
    account = "".join(
        f", {key} {value}" for key, value in sorted(profile.options.items()) if key not in _NOT_ACCOUNT
    )
    return f"{profile.spec.type} at {profile.base_url}{account}"


def prepare(
    options: RunOptions,
    config: Config,
    ledger: Ledger,
    out: TextIO,
    cancelled: threading.Event | None = None,
    env: Mapping[str, str] | Reader | None = None,
) -> tuple[Job, Ingest | None]:
    """Find the job in the ledger, or check the job file and record it as a new job.

    Refuses to resume a job whose file changed, a rehearsal's job in a real run (or the other
    way round), and a profile that now sends elsewhere than where its items went. `cancelled`
    (set by a signal) stops the recording of a new job, which then leaves nothing behind.
    """
    job_id = options.job_name
    sha = jobfile.sha256(options.job_file)
    job = ledger.job(job_id)
    sends_to = targets(config)
    ingest = None
    if job is None:
        rows: Iterable[Any] = jobfile.read(options.job_file, config.profiles)
        new = NewJob(
            job_id=job_id,
            job_file=str(options.job_file),
            job_sha256=sha,
            config_fingerprint=config.fingerprint(),
            rows=rows if cancelled is None else _until(cancelled, rows),
            simulated=options.simulate,
            targets=sends_to,
        )
        ingest = ledger.ingest(new, None if env is None else partial(_credentials_set, config, env))
        if ingest.joined:  # another worker recorded it meanwhile: resume it, as it was recorded
            return prepare(options, config, ledger, out, cancelled, env)
        if not ingest.recorded:
            raise jobfile.refusal(options.job_file, ingest.errors, ingest.error_count)
        job = ledger.job(job_id)
        assert job is not None
    elif job.job_sha256 != sha:
        raise LedgerError(
            f"{options.job_file} has changed since job {job_id!r} began "
            f"(sha256 {job.job_sha256[:12]}... then, {sha[:12]}... now), so it cannot be resumed. "
            f"To finish the job as it was, restore the file. To void the new file as a new job, "
            f"pass --job-id with a new name (or use another --ledger)."
        )
    else:
        missing = {p for (p, state) in ledger.counts(job) if not state.is_final} - set(config.profiles)
        if missing:
            raise ConfigError(
                f"{config.path}: job {job_id!r} still has items for {', '.join(sorted(missing))}, "
                "which this configuration does not define: add the profile back to finish the job"
            )
        _check_history(options, config, ledger, job, sends_to, out)
    return job, ingest


def _credentials_set(config: Config, env: Mapping[str, str] | Reader, providers: set[str]) -> None:
    """Raise ConfigError if a profile the job uses lacks a usable credential or proxy variable."""
    for name in sorted(providers):
        config.profiles[name].secrets(env)
    routes(config, sorted(providers))


def _check_history(
    options: RunOptions, config: Config, ledger: Ledger, job: Job, targets: Mapping[str, str], out: TextIO
) -> None:
    """Refuse to resume a job whose recorded outcomes belong to another kind of run or target."""
    where = f"job {job.job_id!r} in {ledger.location}"
    if job.simulated == 1 and not options.simulate:
        raise LedgerError(
            f"{where} is a rehearsal: its items went to the simulator (--simulate), so its outcomes "
            "say nothing about the real providers, and a real run cannot resume it. Nothing was sent. "
            f"Run the real job with its own ledger (the default {DEFAULT_LEDGER}, or --ledger FILE) "
            "or under a new --job-id"
        )
    if job.simulated == 0 and options.simulate:
        raise LedgerError(
            f"{where} is a real run's: a rehearsal would record the simulator's answers as its "
            f"outcomes. Nothing was sent. Rehearse with a ledger of its own (--ledger {REHEARSAL_LEDGER}, "
            "the default with --simulate)"
        )
    recorded = ledger.targets(job)
    if not recorded:  # recorded before targets were: the profiles' fingerprint is what there is
        if job.config_fingerprint != config.fingerprint():
            print(
                f"warning: the provider profiles in {config.path} changed since job {job.job_id!r} began "
                "(names, types, base URLs or accounts); resuming with the new ones",
                file=out,
            )
        return
    changed = {p for p, old in recorded.items() if targets.get(p, old) != old}
    if not changed:  # the common case: nothing to look up among the items
        return
    for profile, states in sorted(ledger.touched(job).items()):
        if profile not in changed:
            continue
        old, new = recorded[profile], targets[profile]
        if options.allow_target_change:
            print(
                f"warning: profile {profile!r} of {where} sent to {old}; it now sends to {new} "
                "(--allow-target-change): its recorded outcomes are kept",
                file=out,
            )
            continue
        raise LedgerError(_target_changed(config, ledger, job, profile, states, old, new))


def _target_changed(
    config: Config,
    ledger: Ledger,
    job: Job,
    profile: str,
    states: Mapping[ItemState, int],
    old: str,
    new: str,
) -> str:
    """The refusal of a profile whose target changed after some of its items had outcomes there."""
    had = ", ".join(f"{n} {state.value}" for state, n in sorted(states.items()))
    report = shlex.join(["batchvoid", "report", "--ledger", ledger.location, "--job-id", job.job_id])
    return (
        f"profile {profile!r} of job {job.job_id!r} in {ledger.location} now sends to {new}, but items of "
        f"the job have outcomes at {old} ({had}). They say nothing about the new target, so the run is "
        "refused; nothing was sent. If it is the same account at a new address, run the same command "
        "with --allow-target-change (the outcomes are kept, and --retry-failed resends the failed items "
        f"there). If the change is a mistake, set [providers.{profile}] in {config.path} back to the old "
        f"target. If it is another account, see what the old one did ({report} --state voided), then "
        "void the file there as a new job: the same command with --job-id NEW_NAME"
    )


T = TypeVar("T")


def _until(cancelled: threading.Event, rows: Iterable[T]) -> Iterator[T]:
    """The rows, until `cancelled` is set: then RunInterrupted, which rolls the ingest back."""
    for n, row in enumerate(rows):
        if n % _CANCEL_EVERY == 0 and cancelled.is_set():
            raise RunInterrupted("the job was being recorded")
        yield row
