"""The one place where Turnout's errors become HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from router.errors import QueueFull, TurnoutError

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TurnoutError)
    async def turnout_error(request: Request, exc: TurnoutError) -> JSONResponse:
        headers = {}
        if isinstance(exc, QueueFull):
            headers["Retry-After"] = str(exc.retry_after_s)
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)

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
        return JSONResponse(
            {"detail": f"the broker is unreachable or failing: {exc}"}, status_code=503
        )
