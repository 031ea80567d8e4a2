"""Request bodies above MADDPG_API_MAX_BODY_BYTES are refused with 413 before they are parsed."""

from __future__ import annotations

import asyncio
import json
import time

from services.api.body_limit import BodyLimitMiddleware

SMALL = {"scenario": "simple", "explorers": 1, "envs_per_explorer": 2}


def test_a_large_body_is_413_at_once(client, launcher):
    huge = json.dumps(list(range(2_000_000)))  # about 15 MB
    start = time.perf_counter()
    response = client.post("/runs", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "MADDPG_API_MAX_BODY_BYTES" in response.json()["detail"]
    assert time.perf_counter() - start < 2.0
    padded = client.post("/runs", json={**SMALL, "exp_name": "x" * 70_000})
    assert padded.status_code == 413 and launcher.started == []
    assert client.post("/runs", json=SMALL).status_code == 201  # a usual body passes whole
    assert 'route="unmatched",status="413"' in client.get("/metrics").text


def _drive(max_bytes: int, chunks: list[bytes]) -> tuple[list[dict], list[bytes]]:
    """Runs the middleware on a request streamed in `chunks` without a Content-Length; returns what it sent and
    the bodies the app behind it received."""
    sent, received = [], []
    pending = [{"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)]

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        received.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    scope = {"type": "http", "method": "POST", "path": "/runs", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimitMiddleware(app, max_bytes)(scope, receive, send))
    return sent, received


def test_a_streamed_body_is_counted_as_it_comes():
    sent, received = _drive(1024, [b"x" * 600, b"x" * 600, b"x" * 10_000])
    assert sent[0]["status"] == 413 and received == []
    sent, received = _drive(1024, [b"a" * 500, b"b" * 524])
    assert sent[0]["status"] == 200 and received == [b"a" * 500 + b"b" * 524]
