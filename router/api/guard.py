"""The access check as ASGI middleware, ahead of the predict fast path and of
FastAPI, so that one check (``turnout.router.access``) covers every route."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from turnout.router.access import required_scope
from turnout.router.api.deps import Services
from turnout.router.api.errors import ERROR_HEADER, error_response, respond


class Access:
    """Authenticates each HTTP request before any route sees it, and leaves
    the caller's key in ``scope["state"]["api_key"]``."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services], metrics_auth: bool) -> None:
        self.app = app
        # The services exist only once the lifespan has run: looked up per call.
        self._services = services
        self._metrics_auth = metrics_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        wanted = required_scope(method, path, self._metrics_auth)
        if wanted is not None:
            header = None
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value.decode("latin-1")
            services = self._services()
            try:
                key = await services.keyring.authenticate(header, wanted, f"{method} {path}")
            except Exception as exc:  # noqa: BLE001 - answered through the one error family
                status, body, headers = error_response(exc, path)
                services.metrics.error(status, headers.get(ERROR_HEADER, "error"))
                await respond(send, status, body, headers)
                return
            scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)
