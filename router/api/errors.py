"""The one place where Turnout's errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from turnout.core.broker import why
from turnout.core.errors import TooManyRequests, TurnoutError, Unauthorized

# Names the error's class, so that clients (turnout.client) can raise the same
# kind of error the server did; the body stays FastAPI's usual {"detail"}.
ERROR_HEADER = "X-Turnout-Error"

log = logging.getLogger(__name__)


def error_body(path: str, message: str) -> dict[str, Any]:
    """An error's body: FastAPI's usual ``{"detail"}``, or under /v2 the Open
    Inference Protocol's ``{"error"}``."""
    return {"error": message} if path == "/v2" or path.startswith("/v2/") else {"detail": message}


def error_response(exc: Exception, path: str = "") -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for an error a request ran into: Turnout's own
    family by its status code, a broker failure as 503. Used by FastAPI's
    handlers and by the predict fast path alike; ``path`` picks the body's
    form (``error_body``)."""
    if isinstance(exc, TurnoutError):
        headers = {ERROR_HEADER: type(exc).__name__}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, Unauthorized):
            headers["WWW-Authenticate"] = 'Bearer realm="turnout"'
        return exc.status_code, error_body(path, exc.message), headers
    if isinstance(exc, RedisError | OperationalError):
        return (503, error_body(path, why(exc)),
                {ERROR_HEADER: "BrokerUnavailable"})
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    def counted(request: Request, status: int, headers: dict[str, str]) -> None:
        services = getattr(request.app.state, "services", None)
        if services is not None:
            services.metrics.error(status, headers.get(ERROR_HEADER, "error"))

    @app.exception_handler(TurnoutError)
    async def turnout_error(request: Request, exc: TurnoutError) -> JSONResponse:
        status, body, headers = error_response(exc, request.url.path)
        counted(request, status, headers)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        headers = {ERROR_HEADER: "InvalidInput"}
        counted(request, 422, headers)
        return JSONResponse(error_body(request.url.path, "; ".join(problems)), status_code=422,
                            headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own (an unknown path, a method not allowed), in /v2's form there.
        return JSONResponse(error_body(request.url.path, str(exc.detail)),
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RedisError)
    @app.exception_handler(OperationalError)
    async def broker_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("broker error on %s %s: %s", request.method, request.url.path, exc)
        status, body, headers = error_response(exc, request.url.path)
        counted(request, status, headers)
        return JSONResponse(body, status_code=status, headers=headers)


async def respond(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    """A JSON answer straight onto ASGI, for the layers ahead of FastAPI."""
    await respond_bytes(send, status, orjson.dumps(body), "application/json", headers)


async def respond_bytes(send: Send, status: int, data: bytes, content_type: str,
                        headers: dict[str, str]) -> None:
    """Any answer straight onto ASGI (v2's binary tensors)."""
    raw_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(data)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": data})
