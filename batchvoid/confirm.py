"""A real run on a terminal asks first: what it will send, where, how long; then "type N or yes".

Off a terminal (cron, CI, a pipe) nothing is asked: there is no one to answer. `--yes` skips the
question on a terminal too. A rehearsal (--simulate) and --dry-run never ask: they void nothing.
"""

from __future__ import annotations

import os
from typing import TextIO

from rich.console import Console

from batchvoid import plan
from batchvoid.preflight import RunOptions, load_config, targets


def items_to_send(checked: plan.Plan, options: RunOptions) -> int:
    """How many items the run would send: its profiles' unfinished items, capped by --limit."""
    lanes = [lane for lane in checked.lanes if not options.providers or lane.provider in options.providers]
    total = sum(lane.to_send for lane in lanes)
    return total if options.limit is None else min(total, options.limit)


def ask(options: RunOptions, stdin: TextIO, out: TextIO, *, retry_failed: bool) -> bool | None:
    """Show the plan and where each profile sends on `out`, then ask on `stdin`.

    Returns True to go on, False when the answer is anything but the count or "yes", and None
    when the plan says the run cannot start (its reasons are printed; nothing is asked).
    """
    checked = plan.make(options, os.environ, retry_failed=retry_failed)
    console = Console(file=out, highlight=False)
    plan.render(checked, console, console)
    if not checked.runnable:
        return None
    sends_to = targets(load_config(options))
    console.print("Each profile sends to:", markup=False)
    used = {lane.provider for lane in checked.lanes if lane.to_send}
    for name, target in sends_to.items():
        if name in used and (not options.providers or name in options.providers):
            console.print(f"  {name}: {target}", markup=False, soft_wrap=True)
    count = items_to_send(checked, options)
    if count == 0:
        return True
    print(
        f"This voids up to {count} invoices for real, and a void cannot be undone. "
        f"Type {count} or yes to go on: ",
        end="",
        file=out,
        flush=True,
    )
    answer = stdin.readline().strip().lower()
    return answer in (str(count), "yes")
