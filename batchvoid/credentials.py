"""Reads credential values from where secrets live: environment variables, files, commands.

A profile names, for each credential role, exactly one source: `access_key_env` (a variable),
`access_key_file` (a mounted Kubernetes or Docker secret) or `access_key_command` (a password
manager: `op read ...`, `vault kv get ...`). A value is never written in the configuration
file itself. `Profile.secrets` checks every value the same way, wherever it came from.
"""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from batchvoid.errors import ConfigError, RunInterrupted

Kind = Literal["env", "file", "command"]
KINDS: tuple[Kind, ...] = ("env", "file", "command")
COMMAND_TIMEOUT_S = 30.0  # a password manager that waits longer is waiting for a person
SIGNAL_GRACE_S = 0.25  # a command that failed may have died of the run's own signal: time for it to arrive
_POLL_S = 0.05  # how often a running command looks for a signal to the run


@dataclass(frozen=True, slots=True)
class Credential:
    """Where one credential role of a profile comes from."""

    role: str  # "access_key": what the adapter calls it
    kind: Kind
    name: str  # the variable, the file's path, or the command line

    @property
    def key(self) -> str:
        """The configuration key that named it: `access_key_env`, `access_key_file`, ..."""
        return f"{self.role}_{self.kind}"

    @property
    def label(self) -> str:
        """What a person checks: the variable, the file, or the command."""
        return {"env": self.name, "file": self.name, "command": f"`{self.name}`"}[self.kind]

    def describe(self) -> str:
        """'environment variable X', 'file /run/secrets/x', 'the output of command `op read ...`'."""
        return {
            "env": f"environment variable {self.name}",
            "file": f"file {self.name}",
            "command": f"the output of command `{self.name}`",
        }[self.kind]

    def missing(self, where: str) -> str:
        """The error for a source that gave no value: what to do about it."""
        if self.kind == "env":
            return (
                f"{where} needs environment variable {self.name} ({self.key}), which is not set: "
                f"export {self.name}=..., or set {self.key} to the variable that holds it"
            )
        if self.kind == "file":
            return (
                f"{where}: {self.key} names {self.name}, which is empty: put the secret in it (a "
                f"Kubernetes secret without that key?), or set {self.key} to the file that holds it"
            )
        return f"{where}: {self.key} `{self.name}` printed nothing: run it by hand to see why: {self.name}"

    def why_trimmed(self) -> str:
        """The likely cause of whitespace around a value from this source."""
        if self.kind == "env":
            return "a CRLF line end, or the newline of a secret file?"
        return "a CRLF line end, or a second newline?"

    def fix(self) -> str:
        """How to give this source its value again without a stray character."""
        return {
            "env": "set it again without it",
            "file": "write the file again without it",
            "command": "make the command print the credential alone",
        }[self.kind]


class Reader(Protocol):
    """Gives the raw value of a credential (one trailing newline of a file or command removed)."""

    def read(self, credential: Credential, where: str) -> str: ...


class Sources:
    """The real sources: the environment, files and commands, each read at most once.

    One `Sources` serves one run, so a password manager's command runs once per run however
    many checks and profiles need its value. A command runs without a shell (its line is split
    as a shell would, with shlex), with no input, for at most `command_timeout_s`; its output
    and its error output are never shown, since either may hold the secret.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        cancelled: threading.Event | None = None,
    ) -> None:
        """`cancelled`: set by a signal to the run (Ctrl-C), which stops a command that is running."""
        self.env = env
        self.command_timeout_s = command_timeout_s
        self.cancelled = cancelled
        self._read: dict[Credential, str] = {}  # file and command values already read

    def read(self, credential: Credential, where: str) -> str:
        if credential.kind == "env":
            return self.env.get(credential.name, "")
        if credential not in self._read:
            if credential.kind == "file":
                self._read[credential] = _read_file(credential, where)
            else:
                self._read[credential] = _run_command(
                    credential, where, self.command_timeout_s, self.cancelled
                )
        return self._read[credential]


def reader(source: Mapping[str, str] | Reader) -> Reader:
    """`source` as a Reader: a mapping is an environment."""
    if isinstance(source, Mapping):
        return Sources(source)
    return source


def command_argv(line: str) -> list[str]:
    """A command line split as a shell would (no shell runs it); ValueError when it cannot be."""
    argv = shlex.split(line)
    if not argv:
        raise ValueError("it is empty")
    return argv


def _read_file(credential: Credential, where: str) -> str:
    path = Path(credential.name)
    start = f"{where}: {credential.key} names {path}"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{start}, which does not exist: mount the secret there (a Kubernetes or Docker secret "
            f"volume not mounted?) or set {credential.key} to the file that holds it"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"{start}, which is a directory: name the file inside it that holds the secret"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{start}, which cannot be read ({exc.strerror}): run as a user that may read it, or fix "
            "its permissions (ls -l)"
        ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{start}, which is not UTF-8 text: write the credential in it as plain text (the content "
            "is not shown)"
        ) from None
    return text.removesuffix("\n")


def _run_command(
    credential: Credential, where: str, timeout_s: float, cancelled: threading.Event | None = None
) -> str:
    start = f"{where}: {credential.key} `{credential.name}`"
    by_hand = f"run it by hand to see why: {credential.name}"
    interrupted = RunInterrupted(f"{start} was running: nothing was sent")
    try:
        done = _run(command_argv(credential.name), timeout_s, cancelled)
    except _Cancelled:
        raise interrupted from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"{start} did not finish within {timeout_s:g} s and was stopped (a password manager waiting "
            f"for a sign-in?); nothing was sent. Sign in, or {by_hand}"
        ) from None
    except (OSError, ValueError) as exc:
        cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            f"{start} cannot be started ({cause}): check that it is installed and on PATH"
        ) from None
    # Ctrl-C reaches the command too: its failure is then the interrupt's, not the command's.
    if done.returncode != 0 and cancelled is not None and cancelled.wait(SIGNAL_GRACE_S):
        raise interrupted
    # Neither stdout nor stderr is shown: a failing password manager may still print the value.
    if done.returncode != 0:
        status = f"exit status {done.returncode}" if done.returncode > 0 else f"signal {-done.returncode}"
        raise ConfigError(
            f"{start} failed ({status}), and its output is not shown, as it may hold the secret; {by_hand}"
        )
    try:
        text = done.stdout.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{start} printed something that is not UTF-8 text (not shown); {by_hand}"
        ) from None
    value = text.removesuffix("\n")
    if value.strip() and value.strip() in credential.name:
        raise ConfigError(
            f"{where}: {credential.key}: the command prints a value written in the command line itself, "
            "so the secret is in the configuration file. Credentials never are: have the command "
            "fetch it from a password manager or a vault"
        )
    return value


class _Cancelled(Exception):
    """A signal to the run stopped the command."""


def _run(
    argv: list[str], timeout_s: float, cancelled: threading.Event | None
) -> subprocess.CompletedProcess[bytes]:
    """`subprocess.run` with no input and the output captured; once `cancelled` is set (a signal
    to the run), the command is killed and _Cancelled raised, rather than waited for."""
    if cancelled is None:
        return subprocess.run(  # noqa: S603 - the operator's own command, split by shlex, no shell
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    deadline = time.monotonic() + timeout_s
    with subprocess.Popen(  # noqa: S603 - as above
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as command:
        while True:
            left = deadline - time.monotonic()
            try:
                out, err = command.communicate(timeout=max(0.0, min(_POLL_S, left)))
            except subprocess.TimeoutExpired:
                if cancelled.is_set() or left <= 0:
                    command.kill()
                    command.wait()  # not communicate: a child it left may hold the pipes open
                    if cancelled.is_set():
                        raise _Cancelled from None
                    raise subprocess.TimeoutExpired(argv, timeout_s) from None
            else:
                return subprocess.CompletedProcess(argv, command.returncode, out, err)
