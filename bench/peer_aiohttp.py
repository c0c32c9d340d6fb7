"""The script batchvoid competes with: an afternoon's aiohttp loop with a semaphore.

It reads the job CSV as a stream, keeps at most --concurrency voids in flight, sends each
provider's void exactly as batchvoid's adapters do (auth, Rapyd's signature, idempotency
headers, bodies), and counts the answers. No ledger, no log, no retries, no pacing.

    python bench/peer_aiohttp.py JOB.csv --base-url http://127.0.0.1:PORT --concurrency 40

Credentials come from the `BATCHVOID_SIM_*` variables `batchvoid simulate` prints.
Prints a JSON object of answers by HTTP status (or "error") on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from collections import Counter

import aiohttp


def rapyd_signature(
    method: str, path: str, salt: str, timestamp: int, access_key: str, secret_key: str
) -> str:
    to_sign = f"{method.lower()}{path}{salt}{timestamp}{access_key}{secret_key}"
    digest = hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return base64.b64encode(digest.encode()).decode()


class Voider:
    def __init__(self, base_url: str, company_id: str) -> None:
        env = os.environ
        self.base = base_url.rstrip("/")
        self.company_id = company_id
        basic = f"{env['BATCHVOID_SIM_CHARGEOVER_USERNAME']}:{env['BATCHVOID_SIM_CHARGEOVER_PASSWORD']}"
        self.chargeover_auth = "Basic " + base64.b64encode(basic.encode()).decode()
        self.rapyd_access = env["BATCHVOID_SIM_RAPYD_ACCESS_KEY"]
        self.rapyd_secret = env["BATCHVOID_SIM_RAPYD_SECRET_KEY"]
        self.campfire_key = env["BATCHVOID_SIM_CAMPFIRE_API_KEY"]
        self.maple_token = env["BATCHVOID_SIM_MAPLE_API_TOKEN"]
        self.sellapp_key = env["BATCHVOID_SIM_SELLAPP_API_KEY"]
        self.today = dt.date.today().isoformat()

    def request(self, provider: str, invoice: str) -> tuple[str, str, dict[str, str], bytes | None]:
        key = "bv1-" + hashlib.sha256(f"{provider}\x1f{invoice}".encode()).hexdigest()[:48]
        json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if provider == "chargeover":
            url = f"{self.base}/api/v3/invoice/{invoice}/_action/void"
            return "POST", url, {"Authorization": self.chargeover_auth, **json_headers}, b"{}"
        if provider == "rapyd":
            path = f"/v1/invoices/{invoice}/void"
            salt, timestamp = secrets.token_urlsafe(12), int(time.time())
            headers = {
                "access_key": self.rapyd_access,
                "salt": salt,
                "timestamp": str(timestamp),
                "signature": rapyd_signature(
                    "post", path, salt, timestamp, self.rapyd_access, self.rapyd_secret
                ),
                "Content-Type": "application/json",
                "idempotency": key,
            }
            return "POST", self.base + path, headers, None
        if provider == "campfire":
            url = f"{self.base}/coa/api/v1/invoice/{invoice}/void/"
            body = json.dumps({"void_date": self.today}, separators=(",", ":")).encode()
            return "POST", url, {"Authorization": f"Token {self.campfire_key}", **json_headers}, body
        if provider == "maple":
            url = f"{self.base}/api/v1/companies/{self.company_id}/invoices/{invoice}/void"
            headers = {
                "Authorization": f"Bearer {self.maple_token}",
                "Idempotency-Key": key,
                "Accept": "application/json",
            }
            return "POST", url, headers, None
        if provider == "sellapp":
            url = f"{self.base}/api/v2/invoices/{invoice}/mark-voided"
            return (
                "PATCH",
                url,
                {"Authorization": f"Bearer {self.sellapp_key}", "Accept": "application/json"},
                None,
            )
        raise ValueError(f"unknown provider {provider!r}")


async def main(job: str, base_url: str, concurrency: int, company_id: str) -> Counter[str]:
    voider = Voider(base_url, company_id)
    answers: Counter[str] = Counter()
    limit = asyncio.Semaphore(concurrency)
    running: set[asyncio.Task[None]] = set()

    async def void(session: aiohttp.ClientSession, provider: str, invoice: str) -> None:
        method, url, headers, body = voider.request(provider, invoice)
        try:
            async with session.request(method, url, headers=headers, data=body) as response:
                await response.read()
                answers[str(response.status)] += 1
        except (aiohttp.ClientError, TimeoutError):
            answers["error"] += 1
        finally:
            limit.release()

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        with open(job, newline="", encoding="utf-8") as f:  # noqa: ASYNC230 - one small read at a time
            for row in csv.DictReader(f):
                await limit.acquire()
                task = asyncio.create_task(void(session, row["provider"], row["invoice_id"]))
                running.add(task)
                task.add_done_callback(running.discard)
        await asyncio.gather(*running)
    return answers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--company-id", default="cmp_bench")
    args = parser.parse_args()
    counts = asyncio.run(main(args.job, args.base_url, args.concurrency, args.company_id))
    print(json.dumps(counts))
    sys.exit(0 if set(counts) == {"200"} else 1)
