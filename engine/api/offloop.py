"""Answers whose building is bulk Python, made on a thread instead of the event loop.

The API's event loop serves every request, ``/health`` included. A handler that builds
a page of run views or encodes a large JSON body on the loop holds up every request
queued behind it: under a burst of 32 clients the fault campaign measured ``/health``
at 250-400 ms, all of it spent waiting for such handlers (``make chaos ONLY=http-fuzz``).
So handlers fetch on a thread (their queries), build and encode on a thread (here), and
the loop only parses requests and writes answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web


def encode_json(body: Any) -> bytes:
    """JSON bytes; ``default=str``: a state value msgpack accepted but JSON does not
    (bytes) must not turn a read into a 500."""
    return json.dumps(body, default=str).encode()


async def json_built_off_loop(build: Callable[..., Any], *args: Any, status: int = 200
                              ) -> web.Response:
    """The JSON answer ``build(*args)``, built and encoded on a thread."""
    body = await asyncio.to_thread(lambda: encode_json(build(*args)))
    return web.Response(body=body, status=status, content_type="application/json")
