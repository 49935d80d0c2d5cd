"""An app for ``test_functions_show``: a function with one concurrency slot per key whose
step blocks until the file $STEPSTREAM_TEST_RELEASE exists, so runs stay running or
queued until the test releases them. Each step writes ``start {key} {run_id}`` to
$STEPSTREAM_TEST_LEDGER when it begins (one O_APPEND write), so the test checks the
engine's counts against what really executes."""

from __future__ import annotations

import os
import time

import sdk

client = sdk.Client(app_id="gated")
_RELEASE = os.environ.get("STEPSTREAM_TEST_RELEASE", "")
_LEDGER = os.environ.get("STEPSTREAM_TEST_LEDGER")
_fd = os.open(_LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT) if _LEDGER else None


def hold(key: str, run_id: str) -> str:
    if _fd is not None:
        os.write(_fd, f"start {key} {run_id}\n".encode())
    # Polls a condition the test sets (the step runs on the worker's step thread).
    while not os.path.exists(_RELEASE):
        time.sleep(0.02)
    return key


@client.create_function(fn_id="held", trigger=sdk.TriggerEvent(event="gated/held"),
                        concurrency=sdk.Concurrency(limit=1, key="event.data.k"))
async def held(ctx: sdk.Context) -> str:
    return await ctx.step.run("hold", hold, ctx.event.data["k"], ctx.run_id)
