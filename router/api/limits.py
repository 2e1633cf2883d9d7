"""Refuses request bodies over the limit before they are read whole."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from turnout.core.errors import MalformedRequest, PayloadTooLarge, TurnoutError
from turnout.router.api.errors import ERROR_HEADER, error_response, respond

# Told of each error answered here (status, error class): the metrics.
Counter = Callable[[int, str], None]


class BodyLimit:
    """ASGI middleware: a declared Content-Length over the limit is answered 413
    at once; a body without one (chunked) is counted as it arrives and stopped
    with 413 as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, batch_bytes: int | None = None,
                 count: Counter | None = None, upload_bytes: int | None = None) -> None:
        self.app = app
        self._count = count
        self.default_bytes = max_bytes
        # Batch jobs are the one place where a large body is the point.
        self.batch_bytes = batch_bytes or max_bytes
        # And uploads of a model (POST /v1/models/{name}/versions).
        self.upload_bytes = upload_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path.endswith("/batch"):
            limit = self.batch_bytes
        elif path.endswith("/versions") and scope["method"] == "POST":
            limit = self.upload_bytes
        else:
            limit = self.default_bytes
        await self._limited(limit, scope, receive, send)

    async def _limited(self, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._answer(scope, send, MalformedRequest("Content-Length is not a number"))
                return
            if int(declared) > max_bytes:
                await self._answer(scope, send,
                                   PayloadTooLarge(self._message(int(declared), max_bytes)))
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    # Raised inside the endpoint's body read, and so answered by
                    # the same error handler as every other Turnout error.
                    raise PayloadTooLarge(self._message(seen, max_bytes, partial=True))
            return message

        await self.app(scope, counted, send)

    @staticmethod
    def _message(size: int, limit: int, partial: bool = False) -> str:
        given = f"more than {size}" if partial else str(size)
        return f"request body too large: {given} bytes, the limit is {limit}"

    async def _answer(self, scope: Scope, send: Send, exc: TurnoutError) -> None:
        """As every other error answer (turnout.router.api.errors), counted
        once; the connection is closed, since the body was never read."""
        status, body, headers = error_response(exc, scope["path"])
        if self._count is not None:
            self._count(status, headers.get(ERROR_HEADER, "error"))
        await respond(send, status, body, {**headers, "Connection": "close"})
