"""A request the HTTP server cannot parse is the client's error: it is answered 400 and
logged as one INFO line, not as an ERROR with a traceback (the fault campaign's fuzzer
filled the engine's log with those)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from engine.api.http import bound_urls, start_server

BAD = (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Type: \x7f\r\n"
       b"Content-Length: 0\r\n\r\n")


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _send_bad_request() -> bytes:
    app = web.Application()
    app.router.add_get("/health", _health)
    runner = await start_server(app, "127.0.0.1", 0)
    try:
        port = int(bound_urls(runner)[0].rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(BAD)
        await writer.drain()
        answer = await reader.read(200)
        writer.close()
        return answer
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO])
def test_an_unparsable_request_is_a_400_and_one_info_line(
        caplog: pytest.LogCaptureFixture, level: int) -> None:
    caplog.set_level(level, logger="aiohttp.server")
    answer = asyncio.run(_send_bad_request())
    assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer
    server = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert not [r for r in server if r.levelno >= logging.WARNING or r.exc_info]
    if level == logging.INFO:
        [line] = server
        assert line.getMessage().startswith("bad HTTP request (from 127.0.0.1) answered 400")
        assert "Invalid header value char" in line.getMessage()
    else:
        assert server == []
