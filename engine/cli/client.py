"""The command line's client of the engine's HTTP API, and its one-line errors.

Shared by the commands (:mod:`engine.cli.commands`, :mod:`engine.cli.functions`) and
``serve``, so none of them imports another for it.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class CliError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def api_url(value: str) -> str:
    """An http(s) base URL."""
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http:// or https:// URL")
    return value.rstrip("/")


def api_call(base: str, path: str, body: dict[str, Any] | None = None,
             method: str | None = None) -> Any:
    """GET ``base + path`` (POST ``body`` as JSON if given; ``method`` overrides) and
    decode the JSON answer;
    raises :class:`CliError` on any failure. A 404 or 409 raises with the API's own
    message alone; other HTTP errors add the status and URL."""
    url = base + path
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    # The engine's API needs a key outside dev mode: send the first of the same
    # variable the engine reads (dev mode ignores it).
    keys = [k.strip() for k in os.environ.get("STEPSTREAM_API_KEYS", "").split(",")
            if k.strip()]
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers=headers)
    if method:
        req.method = method
    try:
        # A POST waits for the broker's acknowledgement, which the API bounds at 35 s.
        with urllib.request.urlopen(req, timeout=40 if data else 10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise CliError(f"{message} (HTTP {exc.code} from {url})" if exc.code not in (404, 409)
                       else str(message)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach the stepstream API at {base} ({reason}); is "
                       f"`stepstream dev` running? (set --api or STEPSTREAM_API)") from None
    except ValueError:
        raise CliError(f"{url} did not answer with JSON; is that the stepstream API?"
                       ) from None


def api_get(base: str, path: str) -> Any:
    """GET ``base + path``: see :func:`api_call`."""
    return api_call(base, path)
