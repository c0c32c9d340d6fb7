"""The shell peer, for scale: `xargs -P N -L 1 curl ...`, one curl process per void.

Each stdin line holds one request's curl arguments, quoted for xargs. Rapyd's signature is
computed when the lines are written, so they must be used within Rapyd's 60 s clock window.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import secrets
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from batchvoid.keys import idempotency_key
from batchvoid.providers.rapyd import signature
from bench.configs import COMPANY_ID, credential_var


def available() -> str | None:
    """Why this peer cannot run here, or None when it can."""
    missing = [tool for tool in ("curl", "xargs") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not found on PATH" if missing else None


def command(concurrency: int) -> list[str]:
    """xargs running one curl per stdin line, `concurrency` at a time, printing each status."""
    xargs, curl = shutil.which("xargs"), shutil.which("curl")
    assert xargs is not None and curl is not None  # noqa: PT018 - checked by available()
    return [
        xargs,
        "-P",
        str(concurrency),
        "-L",
        "1",
        curl,
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\\n",
        "--noproxy",
        "*",
        "--max-time",
        "30",
    ]


def write_requests(job: Path, out: Path, base_url: str, env: Mapping[str, str], job_id: str) -> int:
    """One line of curl arguments per row of `job`; returns how many."""
    today = dt.date.today().isoformat()
    basic = f"{env[credential_var('chargeover', 'username')]}:{env[credential_var('chargeover', 'password')]}"
    auth = {
        "chargeover": "Basic " + base64.b64encode(basic.encode()).decode(),
        "campfire": "Token " + env[credential_var("campfire", "api_key")],
        "maple": "Bearer " + env[credential_var("maple", "api_token")],
        "sellapp": "Bearer " + env[credential_var("sellapp", "api_key")],
    }
    access, secret = env[credential_var("rapyd", "access_key")], env[credential_var("rapyd", "secret_key")]
    json_headers = ["Content-Type: application/json", "Accept: application/json"]
    count = 0
    with job.open(newline="", encoding="utf-8") as f, out.open("w", encoding="utf-8") as lines:
        for row in csv.DictReader(f):
            provider, invoice = row["provider"], row["invoice_id"]
            key = idempotency_key(job_id, provider, invoice)
            body: str | None = None
            if provider == "chargeover":
                method, path = "POST", f"/api/v3/invoice/{invoice}/_action/void"
                headers, body = [f"Authorization: {auth[provider]}", *json_headers], "{}"
            elif provider == "rapyd":
                method, path = "POST", f"/v1/invoices/{invoice}/void"
                salt, timestamp = secrets.token_urlsafe(12), int(time.time())
                sign = signature(
                    method=method,
                    path=path,
                    salt=salt,
                    timestamp=timestamp,
                    access_key=access,
                    secret_key=secret,
                )
                headers = [
                    f"access_key: {access}",
                    f"salt: {salt}",
                    f"timestamp: {timestamp}",
                    f"signature: {sign}",
                    "Content-Type: application/json",
                    f"idempotency: {key}",
                ]
            elif provider == "campfire":
                method, path = "POST", f"/coa/api/v1/invoice/{invoice}/void/"
                headers = [f"Authorization: {auth[provider]}", *json_headers]
                body = json.dumps({"void_date": today}, separators=(",", ":"))
            elif provider == "maple":
                method, path = "POST", f"/api/v1/companies/{COMPANY_ID}/invoices/{invoice}/void"
                headers = [
                    f"Authorization: {auth[provider]}",
                    f"Idempotency-Key: {key}",
                    "Accept: application/json",
                ]
            else:
                method, path = "PATCH", f"/api/v2/invoices/{invoice}/mark-voided"
                headers = [f"Authorization: {auth[provider]}", "Accept: application/json"]
            args = ["-X", method]
            for header in headers:
                args += ["-H", header]
            if body is not None:
                args += ["--data-raw", body]
            args.append(base_url + path)
            lines.write(" ".join(_quote(arg) for arg in args) + "\n")
            count += 1
    return count


def _quote(arg: str) -> str:
    """Quote one argument the way xargs reads it: in double quotes, or single if it has them."""
    if '"' not in arg:
        return f'"{arg}"'
    if "'" in arg:
        raise ValueError(f"cannot quote {arg!r} for xargs")
    return f"'{arg}'"
