"""The predict endpoints' hot path (v1's predict, v2's infer), answered
before FastAPI's routing.

At a few thousand requests a second, FastAPI's per-request machinery (route
matching over every route, dependency solving, its middleware stack) costs
more CPU than everything Turnout does for a request. This ASGI wrapper sends
``POST /v1/models/{name}/predict`` straight to the same function the FastAPI
route calls (``predict_response``), behind the same body limit, with the same
error mapping; every other request, and the OpenAPI description of these,
stays with FastAPI. (Without it, v2's infer served 0.38x v1's predict at 32
clients: bench scenario m.)
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from turnout.router.access import owner_of
from turnout.router.api.errors import ERROR_HEADER, error_response, respond, respond_bytes
from turnout.router.api.models import predict_response
from turnout.router.api.v2 import infer_response

log = logging.getLogger(__name__)

_PREDICT = re.compile(r"^/v1/models/([^/]+)/(?:versions/([^/]+)/)?predict$")
_INFER = re.compile(r"^/v2/models/([^/]+)/(?:versions/([^/]+)/)?infer$")


class PredictFastPath:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT.match(scope["path"])
            if match is not None:
                await self._predict(match.group(1), match.group(2), scope, receive, send)
                return
            match = _INFER.match(scope["path"])
            if match is not None:
                await self._infer(match.group(1), match.group(2), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _predict(
        self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            raw = await _body(receive)
            route_key = idempotency_key = content_type = None
            for key, value in scope["headers"]:
                if key == b"x-route-key":
                    route_key = value.decode("latin-1")
                elif key == b"idempotency-key":
                    idempotency_key = value.decode("latin-1")
                elif key == b"content-type":
                    content_type = value.decode("latin-1")
            status, body, headers = await predict_response(
                self.app.state.services, name, raw, version=version, route_key=route_key,
                owner=owner_of(scope), idempotency_key=idempotency_key, scope=scope,
                content_type=content_type, query=scope.get("query_string", b"").decode("latin-1"),
            )
        except Exception as exc:  # noqa: BLE001 - mapped exactly as FastAPI's handlers map it
            try:
                status, body, headers = error_response(exc)
            except Exception:
                log.exception("predict %s failed", name)
                status, body, headers = 500, {"detail": "internal error"}, {}
            self.app.state.services.metrics.error(status, headers.get(ERROR_HEADER, "error"))
        await respond(send, status, body, headers)


    async def _infer(
        self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """v2's infer, the same way (its errors in v2's form)."""
        try:
            status, data, content_type, headers = await infer_response(
                self.app.state.services, name, version, await _body(receive), scope)
        except Exception as exc:  # noqa: BLE001 - mapped exactly as FastAPI's handlers map it
            try:
                status, body, headers = error_response(exc, scope["path"])
            except Exception:
                log.exception("infer %s failed", name)
                status, body, headers = 500, {"error": "internal error"}, {}
            self.app.state.services.metrics.error(status, headers.get(ERROR_HEADER, "error"))
            await respond(send, status, body, headers)
            return
        await respond_bytes(send, status, data, content_type, headers)


async def _body(receive: Receive) -> bytes:
    # The body limit is enforced around this (``BodyLimit``), for both paths.
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
