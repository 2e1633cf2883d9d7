"""A small client for Turnout's HTTP API, on httpx: what the operator
commands (``turnout models promote``, ``turnout train``, ``turnout reload``)
use to talk to a running stack.

Errors come back as ``ApiError`` with the server's status and message.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class Client:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        try:
            r = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, f"cannot reach the API at {self.url}: {exc}") from None
        try:
            body = r.json()
        except ValueError:
            body = {"detail": r.text}
        if r.status_code >= 400:
            raise ApiError(r.status_code, str(body.get("detail", body)))
        return r.status_code, body

    def model(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/models/{name}")[1]

    def promote(
        self, name: str, version: str, canary_percent: float | None = None, wait: float | None = None
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"version": version}
        if canary_percent is not None:
            body["canary_percent"] = canary_percent
        if wait is not None:
            body["wait"] = wait
        timeout = (wait if wait is not None else 60) + 30
        return self.request("PUT", f"/v1/models/{name}/default", json=body, timeout=timeout)

    def train(
        self, name: str, dataset: str, params: dict[str, Any] | None = None,
        seed: int | None = None, search: dict[str, list[Any]] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"dataset": dataset}
        if params:
            body["params"] = params
        if seed is not None:
            body["seed"] = seed
        if search:
            body["search"] = search
        return self.request("POST", f"/v1/models/{name}/train", json=body)[1]

    def training(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/training/{job_id}")[1]

    def cancel_training(self, job_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/training/{job_id}")[1]
