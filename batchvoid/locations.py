"""Where batchvoid finds its configuration file and its default ledger.

The configuration is the first of these that is given or exists:

1. `--config FILE`;
2. the file the environment variable `BATCHVOID_CONFIG` names (it must exist);
3. `./batchvoid.toml`, in the working directory;
4. `batchvoid.toml` in the user's configuration directory (platformdirs: on Linux
   `$XDG_CONFIG_HOME/batchvoid/`, by default `~/.config/batchvoid/`; on macOS
   `~/Library/Application Support/batchvoid/`);
5. `/etc/batchvoid/batchvoid.toml`.

The ledger is `--ledger FILE`, else the file `BATCHVOID_LEDGER` names, else `batchvoid.sqlite`
in the working directory; either may instead be a `postgresql://` URL. A rehearsal
(`--simulate`) never shares a real run's ledger: it is `--ledger FILE`, else
`<name>.rehearsal<suffix>` next to the file `BATCHVOID_LEDGER` names (`rehearsal.sqlite` when
that is a URL), else `rehearsal.sqlite`.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from batchvoid.errors import ConfigError

CONFIG_ENV = "BATCHVOID_CONFIG"
LEDGER_ENV = "BATCHVOID_LEDGER"
CONFIG_NAME = "batchvoid.toml"
SYSTEM_DIR = Path("/etc/batchvoid")
DEFAULT_LEDGER = Path("batchvoid.sqlite")
REHEARSAL_LEDGER = Path("rehearsal.sqlite")  # --simulate's own: a rehearsal never shares a real run's


@dataclass(frozen=True, slots=True)
class Found:
    """The configuration file to read, how it was chosen, and where the search looked."""

    path: Path | None  # None: none was given and none exists where batchvoid looks
    origin: str  # "--config", "BATCHVOID_CONFIG", "the working directory", ...
    looked: tuple[Path, ...] = ()  # the places searched, in order

    def describe(self) -> str:
        """'batchvoid.toml (the working directory)': the file, and why it is the one."""
        return f"{self.path} ({self.origin})"


def user_dir() -> Path:
    """The user's configuration directory for batchvoid (honours XDG_CONFIG_HOME on Linux)."""
    return Path(platformdirs.user_config_dir("batchvoid", appauthor=False))


def places(system_dir: Path | None = None) -> tuple[tuple[str, Path], ...]:
    """Where a configuration file is looked for, when none is named, in order."""
    return (
        ("the working directory", Path(CONFIG_NAME)),
        ("the user configuration directory", user_dir() / CONFIG_NAME),
        ("the system configuration directory", (system_dir or SYSTEM_DIR) / CONFIG_NAME),
    )


def find_config(explicit: Path | None, env: Mapping[str, str], *, system_dir: Path | None = None) -> Found:
    """The configuration file: --config, else BATCHVOID_CONFIG, else the first that exists."""
    if explicit is not None:
        return Found(explicit, "--config")
    if named := env.get(CONFIG_ENV, "").strip():
        path = Path(named).expanduser()
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"{CONFIG_ENV} names {path}, which {what}: point it at a configuration file, unset it "
                f"to use {CONFIG_NAME} from the usual places, or write one there with "
                f"`batchvoid config init {shlex.quote(str(path))}`"
            )
        return Found(path, CONFIG_ENV)
    searched = places(system_dir)
    for origin, path in searched:
        if path.is_file():
            return Found(path, origin, tuple(p for _, p in searched))
    return Found(None, "nowhere", tuple(p for _, p in searched))


def not_found(found: Found) -> str:
    """Where the search looked, and what to do, for a message when it found nothing."""
    looked = ", ".join(str(path) if path.is_absolute() else f"./{path}" for path in found.looked)
    return (
        f"pass --config FILE, set {CONFIG_ENV}, or put a {CONFIG_NAME} in one of the places batchvoid "
        f"looks ({looked}, none of which exists); `batchvoid config init` writes a commented one "
        f"to ./{CONFIG_NAME}"
    )


def ledger_path(explicit: Path | str | None, env: Mapping[str, str], *, simulate: bool = False) -> Path | str:
    """The ledger: --ledger, else BATCHVOID_LEDGER (for a rehearsal: next to it), else the default.

    A `postgresql://` URL stays a str. A rehearsal never shares a database named by
    BATCHVOID_LEDGER: it takes the default rehearsal file (--ledger URL --simulate is allowed).
    """
    if explicit is not None:
        return explicit
    if named := env.get(LEDGER_ENV, "").strip():
        if named.startswith(("postgresql://", "postgres://")):
            return REHEARSAL_LEDGER if simulate else named
        path = Path(named).expanduser()
        return path.with_name(f"{path.stem}.rehearsal{path.suffix}") if simulate else path
    return REHEARSAL_LEDGER if simulate else DEFAULT_LEDGER
