"""The one place where Turnout's errors become HTTP responses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from turnout.errors import QueueFull, TurnoutError

log = logging.getLogger(__name__)


def error_response(exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for an error a request ran into: Turnout's own
    family by its status code, a broker failure as 503. Used by FastAPI's
    handlers and by the predict fast path alike."""
    if isinstance(exc, TurnoutError):
        headers = {}
        if isinstance(exc, QueueFull):
            headers["Retry-After"] = str(exc.retry_after_s)
        return exc.status_code, {"detail": exc.message}, headers
    if isinstance(exc, RedisError | OperationalError):
        return 503, {"detail": f"the broker is unreachable or failing: {exc}"}, {}
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TurnoutError)
    async def turnout_error(request: Request, exc: TurnoutError) -> JSONResponse:
        status, body, headers = error_response(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(RedisError)
    @app.exception_handler(OperationalError)
    async def broker_error(request: Request, exc: Exception) -> JSONResponse:
        log.warning("broker error on %s %s: %s", request.method, request.url.path, exc)
        status, body, headers = error_response(exc)
        return JSONResponse(body, status_code=status, headers=headers)
