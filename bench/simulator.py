"""The provider simulator in its own process: `batchvoid simulate --port 0`, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from batchvoid.simulator import CREDENTIALS
from bench.process import BenchError

READY_TIMEOUT_S = 20.0
_LISTENING = re.compile(r"Simulator listening on (http://\S+)")
_EXPORT = re.compile(r"^export ([A-Z0-9_]+)=(.*)$", re.MULTILINE)


class SimulatorProcess:
    """Starts the simulator with `faults`, reads its URL and test credentials, stops it on exit.

    `env` holds the `BATCHVOID_SIM_*` variables it printed; `reset()` makes every invoice open
    again between runs; `stats()` is `GET /_sim/stats`.
    """

    def __init__(self, logs: Path, *, name: str = "simulator", faults: Sequence[str] = ()) -> None:
        self.name = name
        self.faults = tuple(faults)
        self.base_url = ""
        self.env: dict[str, str] = {}
        self._logs = logs
        self._proc: subprocess.Popen[bytes] | None = None
        # Loopback only: never through a proxy the environment may name.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __enter__(self) -> Self:
        out, err = self._logs / f"{self.name}.out", self._logs / f"{self.name}.err"
        args = [sys.executable, "-m", "batchvoid", "simulate", "--port", "0"]
        for fault in self.faults:
            args += ["--fault", fault]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True
            )
        try:
            self._await_ready(out, err)
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _await_ready(self, out: Path, err: Path) -> None:
        expected = sum(len(roles) for roles in CREDENTIALS.values())
        deadline = time.monotonic() + READY_TIMEOUT_S
        assert self._proc is not None
        while time.monotonic() < deadline:
            listening = _LISTENING.search(err.read_text(errors="replace"))
            exports = dict(_EXPORT.findall(out.read_text(errors="replace")))
            if listening and len(exports) >= expected:
                self.base_url = listening[1]
                self.env = exports
                return
            if self._proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self._proc.returncode}: {err.read_text()[-500:]}")
            time.sleep(0.05)
        raise BenchError(f"{self.name} did not say where it listens within {READY_TIMEOUT_S:.0f}s")

    def _stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # it stops cleanly on Ctrl-C
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def reset(self) -> None:
        """Every invoice open again; every counter, limit window and stored replay forgotten."""
        self._call("POST", "/_sim/reset")

    def stats(self) -> dict[str, Any]:
        """Per provider type and `totals`: requests, voided, throttled, ..."""
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def _call(self, method: str, path: str) -> Any:
        request = urllib.request.Request(
            self.base_url + path, method=method, data=b"" if method == "POST" else None
        )
        with self._http.open(request, timeout=10) as answer:
            return json.loads(answer.read())
