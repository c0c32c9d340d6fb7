"""A run's audit record: who started it, from where, with what command, and how it ended.

The ledger keeps it (`RunRecords`); this module words its two halves from the process and
from the run's report. The run id is made once, before the log opens, so that every log line
and every attempt row of the run carries it as one bound field.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
import secrets
import shlex
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence

from batchvoid import __version__
from batchvoid.ledger.api import NewRun, RunEnd
from batchvoid.models import ItemState

# A URL's user:password, and an option that names a secret, wherever they are on a command line.
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_QUERY_PASSWORD = re.compile(r"(?<=[?&]password=)[^&\s]+", re.IGNORECASE)  # postgresql://h/db?password=
_SECRET_OPTION = re.compile(
    r"^(--?[\w-]*(?:password|secret|token|key|credential)[\w-]*)(=.*)?$", re.IGNORECASE
)


def new_run_id(now: dt.datetime | None = None) -> str:
    """A run id that sorts by start time and is unique: 20261202T215549Z-3fa2c1."""
    at = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{at}-{secrets.token_hex(3)}"


def scrub_command(argv: Sequence[str]) -> str:
    """The command line as a shell would take it, with any secret in it replaced by '***'.

    batchvoid takes no secret on its command line (credentials come from the environment, files
    or commands), but a URL with a user:password, or an option of another tool's wrapper, may
    still be there: neither is stored.
    """
    words: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            words.append("***")
            hide_next = False
            continue
        if match := _SECRET_OPTION.match(word):
            if match.group(2):
                words.append(f"{match.group(1)}=***")
            else:
                words.append(word)
                hide_next = True
            continue
        words.append(_QUERY_PASSWORD.sub("***", _USERINFO.sub("***@", word)))
    return shlex.join(words)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's)
        return str(os.getuid())


def new_run(run_id: str, argv: Sequence[str], *, simulated: bool, targets: Mapping[str, str]) -> NewRun:
    """The first half of a run's record, from this process."""
    return NewRun(
        run_id=run_id,
        user=_user(),
        host=socket.gethostname(),
        pid=os.getpid(),
        version=__version__,
        command=scrub_command(argv),
        simulated=simulated,
        targets=dict(targets),
    )


def run_end(
    exit_status: int, counts: Mapping[tuple[str, ItemState], int], requests: Mapping[str, int]
) -> RunEnd:
    """The second half of a run's record: the job's counts by provider and state, this run's requests."""
    by_provider: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for (provider, state), n in sorted(counts.items()):
        by_provider[provider][str(state)] = n
    return RunEnd(exit_status, dict(by_provider), dict(requests), {})
