"""Which body limit a path gets: uploads of a model have their own."""

from __future__ import annotations

import asyncio
from typing import Any

from turnout.router.api.limits import BodyLimit


def _status(limit: BodyLimit, method: str, path: str, length: int) -> int:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-length", str(length).encode())]}
    asyncio.run(limit(scope, receive, send))
    return int(sent[0]["status"])


def test_uploads_take_their_own_limit_and_nothing_else_does() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    limit = BodyLimit(app, max_bytes=1000, batch_bytes=5000, upload_bytes=100_000)
    assert _status(limit, "POST", "/v1/models/m/versions", 50_000) == 200
    assert _status(limit, "POST", "/v1/models/m/versions", 200_000) == 413
    assert _status(limit, "POST", "/v1/models/m/predict", 50_000) == 413
    assert _status(limit, "POST", "/v1/models/m/batch", 4000) == 200
    assert _status(limit, "GET", "/v1/models/m/versions", 50_000) == 413
