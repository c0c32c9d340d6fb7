"""`batchvoid report --format html`: one self-contained page for finance, no network fetches.

The job, its runs, a chart of states per provider (inline SVG), the failure reasons with their
counts, and the item table: searchable and split into pages by a small inline script, with
the first page written as plain rows so that it reads without the script too. A large job's
table holds its first `MAX_ITEMS` items, failed and unfinished ones first; the CSV report has
every one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
from collections.abc import Collection, Mapping
from itertools import islice
from typing import Any, TextIO

from batchvoid.ledger import Job, Ledger
from batchvoid.models import DONE, UNDONE, ItemState
from batchvoid.report import run_exit

MAX_ITEMS = 50_000  # rows in the page's table; the page stays a few MB
PAGE = 100
COLUMNS = ("provider", "invoice_id", "state", "reason", "http_status", "attempts", "line", "updated_at")
COLOURS = {
    ItemState.VOIDED: "#2e7d32",
    ItemState.ALREADY_VOID: "#81c784",
    ItemState.FAILED: "#c62828",
    ItemState.PENDING: "#f9a825",
    ItemState.IN_FLIGHT: "#ef6c00",
}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
th{background:#f3f3f3}td.n{text-align:right}.muted{color:#666}
#search{padding:4px;width:24em}.pager button{margin:0 4px}
"""

_SCRIPT = """
(function () {
  var rows = JSON.parse(document.getElementById("items-data").textContent);
  var body = document.getElementById("items-body"), info = document.getElementById("page-info");
  var search = document.getElementById("search"), page = 0, shown = rows;
  function draw() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    var html = [];
    shown.slice(page * PAGE, (page + 1) * PAGE).forEach(function (row) {
      var cells = row.map(function (v) {
        var d = document.createElement("td");
        d.textContent = v === null ? "" : String(v);
        return d.outerHTML;
      });
      html.push("<tr>" + cells.join("") + "</tr>");
    });
    body.innerHTML = html.join("");
    info.textContent = "page " + (page + 1) + " of " + pages + " (" + shown.length + " items)";
  }
  search.addEventListener("input", function () {
    var q = search.value.toLowerCase();
    function hit(r) { return r.join(" ").toLowerCase().indexOf(q) >= 0; }
    shown = q ? rows.filter(hit) : rows;
    page = 0; draw();
  });
  document.getElementById("prev").addEventListener("click", function () {
    if (page > 0) { page--; draw(); }
  });
  document.getElementById("next").addEventListener("click", function () { page++; draw(); });
  draw();
})();
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _when(timestamp: str | None) -> str:
    if not timestamp:
        return "-"
    return dt.datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M:%S UTC")


def chart_svg(counts: Mapping[tuple[str, ItemState], int]) -> str:
    """Items per provider as horizontal bars stacked by state, with a legend; inline SVG."""
    providers = sorted({provider for provider, _ in counts})
    most = max((sum(n for (p, _), n in counts.items() if p == provider) for provider in providers), default=0)
    width, label, bar, gap = 640, 110, 22, 8
    height = len(providers) * (bar + gap) + 40
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Items per provider by state" '
        f'width="{width + label + 60}" height="{height}" font-size="12">'
    ]
    for row, provider in enumerate(providers):
        y = row * (bar + gap)
        parts.append(f'<text x="0" y="{y + bar * 0.7:.0f}">{_e(provider)}</text>')
        x = float(label)
        total = 0
        for state in ItemState:
            n = counts.get((provider, state), 0)
            if not n:
                continue
            w = width * n / most if most else 0
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{COLOURS[state]}">'
                f"<title>{_e(provider)} {state.value}: {n}</title></rect>"
            )
            x += w
            total += n
        parts.append(f'<text x="{x + 4:.1f}" y="{y + bar * 0.7:.0f}">{total}</text>')
    y = len(providers) * (bar + gap) + 14
    x = float(label)
    for state in ItemState:
        parts.append(f'<rect x="{x:.0f}" y="{y - 10}" width="12" height="12" fill="{COLOURS[state]}"/>')
        parts.append(f'<text x="{x + 16:.0f}" y="{y}">{state.value}</text>')
        x += 110
    parts.append("</svg>")
    return "".join(parts)


def _items(
    ledger: Ledger, job: Job, states: Collection[ItemState] | None, run: str | None
) -> list[list[Any]]:
    """The table's rows: failed and unfinished items first, then the rest, at most MAX_ITEMS."""
    chosen = set(ItemState) if states is None else set(states)
    first = chosen & (set(UNDONE) | {ItemState.PENDING, ItemState.IN_FLIGHT})
    rows: list[list[Any]] = []
    for group in (first, chosen & set(DONE)):
        if group and len(rows) < MAX_ITEMS:
            with contextlib.closing(ledger.items(job, group, run)) as items:  # read no further
                for item in islice(items, MAX_ITEMS - len(rows)):
                    rows.append([item[name] for name in COLUMNS])
    return rows


def write_html(
    ledger: Ledger, job: Job, states: Collection[ItemState] | None, out: TextIO, run: str | None = None
) -> int:
    """Write the page for `job` (its table: the items in `states`, or that `run` finished); returns rows."""
    counts = ledger.counts(job)
    total = sum(counts.values())
    rows = _items(ledger, job, states, run)
    matching = sum(n for (_, state), n in counts.items() if states is None or state in states)
    kind = "a rehearsal on the simulator" if job.simulated else "real"
    w = out.write
    w('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">')
    w(f"<title>batchvoid report: {_e(job.job_id)}</title><style>{_STYLE}</style></head><body>")
    w(f"<h1>Job {_e(job.job_id)}</h1>")
    w(f'<p>From <code>{_e(job.job_file)}</code> ({kind}), recorded {_e(_when(job.created_at))}; '
      f"{job.items} items, {job.duplicates} duplicate rows, {job.runs} runs. Ledger "
      f'<code>{_e(ledger.location)}</code>. <span class="muted">Written '
      f"{_e(_when(dt.datetime.now(dt.UTC).isoformat()))}.</span></p>")  # fmt: skip

    w("<h2>Items per provider</h2>")
    w(chart_svg(counts))
    w("<table><thead><tr><th>provider</th>")
    w("".join(f"<th>{s.value}</th>" for s in ItemState) + "<th>items</th></tr></thead><tbody>")
    for provider in sorted({p for p, _ in counts}):
        cells = "".join(f'<td class="n">{counts.get((provider, s), 0)}</td>' for s in ItemState)
        mine = sum(n for (p, _), n in counts.items() if p == provider)
        w(f'<tr><td>{_e(provider)}</td>{cells}<td class="n">{mine}</td></tr>')
    totals = "".join(
        f'<td class="n">{sum(n for (_, s2), n in counts.items() if s2 is s)}</td>' for s in ItemState
    )
    w(f'<tr><th>total</th>{totals}<td class="n">{total}</td></tr></tbody></table>')

    w("<h2>Runs</h2>")
    runs = ledger.runs(job)
    if not runs:
        w('<p class="muted">No run records (the ledger is older than run records).</p>')
    else:
        w("<table><thead><tr><th>run id</th><th>started</th><th>ended</th><th>by</th><th>kind</th>"
          "<th>exit</th><th>requests</th><th>429s</th><th>command</th></tr></thead><tbody>")  # fmt: skip
        for record in runs:
            end = record.end
            w(
                f"<tr><td><code>{_e(record.run_id)}</code></td><td>{_e(_when(record.started_at))}</td>"
                f"<td>{_e(_when(record.finished_at))}</td>"
                f"<td>{_e(record.new.user)}@{_e(record.new.host)} pid {record.new.pid}</td>"
                f"<td>{'rehearsal' if record.new.simulated else 'real'}</td>"
                f'<td class="n">{run_exit(record, last=record is runs[-1])}</td>'
                f'<td class="n">{"-" if end is None else sum(end.requests.values())}</td>'
                f'<td class="n">{"-" if end is None else sum(end.throttled.values())}</td>'
                f"<td><code>{_e(record.new.command)}</code></td></tr>"
            )
        w("</tbody></table>")

    w("<h2>Failure reasons</h2>")
    reasons = ledger.failure_reasons(job, 50)
    if not reasons:
        w("<p>No item failed.</p>")
    else:
        w("<table><thead><tr><th>items</th><th>provider</th><th>reason</th></tr></thead><tbody>")
        for provider, reason, n in reasons:
            w(f'<tr><td class="n">{n}</td><td>{_e(provider)}</td><td>{_e(reason or "(no reason)")}</td></tr>')
        w("</tbody></table>")

    w("<h2>Items</h2>")
    if len(rows) < matching and run is None:
        w(f'<p class="muted">The first {len(rows)} of {matching} items (failed and unfinished first); '
          "<code>batchvoid report -o items.csv</code> writes every one.</p>")  # fmt: skip
    w('<p><input id="search" type="search" placeholder="Search the items" aria-label="Search the items"> '
      '<span class="pager"><button id="prev" type="button">previous</button>'
      '<span id="page-info"></span><button id="next" type="button">next</button></span></p>')  # fmt: skip
    w(
        "<table><thead><tr>"
        + "".join(f"<th>{name}</th>" for name in COLUMNS)
        + '</tr></thead><tbody id="items-body">'
    )
    for row in rows[:PAGE]:
        w("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>")
    w("</tbody></table>")
    data = json.dumps(rows, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    w(f'<script id="items-data" type="application/json">{data}</script>')
    w(f"<script>var PAGE = {PAGE};{_SCRIPT}</script>")
    w("</body></html>\n")
    return len(rows)
