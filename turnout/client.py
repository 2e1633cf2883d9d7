"""Turnout's Python client, on httpx, in sync (``Client``) and async
(``AsyncClient``) forms::

    from turnout.client import Client

    with Client() as turnout:            # TURNOUT_URL, TURNOUT_API_KEY
        turnout.predict("iris", [[5.1, 3.5, 1.4, 0.2]])["predictions"]
        task = turnout.submit("digits-cnn", rows)
        task.result(timeout=30)
        turnout.batch("iris", many_rows)  # with a progress bar

**Retries.** Connection errors, 429 and 503 (and a proxy's 502/504) are
retried with exponential backoff that honours ``Retry-After``, until the
call's deadline (``retry_for_s``). 400, 401, 403, 404, 409, 413 and 422 never
are. Every predict and batch carries an ``Idempotency-Key``, the same on each
retry, so a retry whose first try did get through returns the task that try
made, never a second one.

**Errors** are typed by status, and ``kind`` names the server's own error
(``UnknownModel``, ``QueueFull``, …): ``NotFound``, ``InvalidInput``,
``Conflict``, ``TooManyRequests``, ``Unavailable``, ``Unauthorized``,
``Forbidden``; ``Unreachable`` when no answer came; ``TaskFailed`` when a
task ended in FAILURE or REVOKED.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

FINISHED = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
_RETRY_STATUS = frozenset({429, 502, 503, 504})


class ApiError(Exception):
    """An error answer (or none) from the Turnout API."""

    def __init__(self, status: int, detail: str, kind: str = "", retry_after: float | None = None):
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail
        self.kind = kind  # the server's error class, from X-Turnout-Error
        self.retry_after = retry_after


class Unreachable(ApiError):
    """No answer: the API could not be reached, or the connection broke."""


class InvalidInput(ApiError):
    """400/422: the request was wrong; the detail names the field."""


class Unauthorized(ApiError):
    """401: no API key, or a wrong or revoked one."""


class Forbidden(ApiError):
    """403: the key lacks the scope."""


class NotFound(ApiError):
    """404: unknown model, version, task, batch, job or key."""


class Conflict(ApiError):
    """409: finished already, not loaded, a failed load, a reused key."""


class PayloadTooLarge(ApiError):
    """413."""


class TooManyRequests(ApiError):
    """429: the queue is full, or the key's rate is spent."""


class Unavailable(ApiError):
    """503 (or a proxy's 502/504): no live worker, or the broker is down."""


class TaskFailed(ApiError):
    """A task (or batch job) ended in FAILURE or REVOKED; ``view`` is its body."""

    def __init__(self, view: dict[str, Any]) -> None:
        what = view.get("task_id") or view.get("batch_id") or view.get("job_id")
        super().__init__(0, f"{what} ended {view.get('status')}: {view.get('error', '')}".strip(),
                         kind=str(view.get("status")))
        self.view = view


_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    413: PayloadTooLarge, 422: InvalidInput, 429: TooManyRequests, 502: Unavailable,
    503: Unavailable, 504: Unavailable,
}


def error_for(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = response.text
    retry_after = None
    if "retry-after" in response.headers:
        try:
            retry_after = float(response.headers["retry-after"])
        except ValueError:
            retry_after = None
    kind = response.headers.get("x-turnout-error", "")
    cls = _BY_STATUS.get(response.status_code, ApiError)
    return cls(response.status_code, str(detail), kind, retry_after)


@dataclass
class Call:
    """One API call, planned: what to send, whether a retry is safe, and what
    to make of the answer. The sync and async clients run the same plans."""

    method: str
    path: str
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # Safe to send again after a broken connection (GET, PUT, or a POST with
    # an Idempotency-Key); otherwise only a refused connection is retried.
    repeatable: bool = True
    timeout: float | None = None


@dataclass
class Backoff:
    """Exponential backoff with full jitter, overridden by Retry-After, until
    a deadline."""

    deadline: float
    first_s: float = 0.1
    cap_s: float = 5.0
    attempt: int = 0
    waits: list[float] = field(default_factory=list)
    hops: int = 0  # moves to another API process

    def next(self, error: ApiError) -> float | None:
        """Seconds to wait before the next try, or None: give up."""
        left = self.deadline - time.monotonic()
        if error.retry_after is not None:
            delay = error.retry_after
        else:
            delay = random.uniform(0, min(self.cap_s, self.first_s * 2**self.attempt))
        self.attempt += 1
        if delay > left:
            return None
        self.waits.append(delay)
        return delay


def retryable(error: ApiError, call: Call) -> bool:
    if isinstance(error, Unreachable):
        return call.repeatable or error.kind == "ConnectError"
    return error.status in _RETRY_STATUS


def _url_from_env() -> str:
    """Where the API is, from the same variables the server reads. Read here,
    not through ``turnout.core.settings``, so that the client installs with
    httpx alone (no pydantic, no server)."""
    if os.environ.get("TURNOUT_URL"):
        return os.environ["TURNOUT_URL"]
    host = os.environ.get("TURNOUT_API_HOST") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{os.environ.get('TURNOUT_API_PORT') or 8000}"


# Answers after which the next API process is tried at once, when there are
# several: this one is going away or cannot reach its broker.
_FAIL_OVER_STATUS = frozenset({502, 503})


def _urls(url: str | Sequence[str] | None) -> list[str]:
    """Several API processes, as a list or comma-separated (TURNOUT_URL too)."""
    given = url or _url_from_env()
    parts = given.split(",") if isinstance(given, str) else list(given)
    urls = [u.strip().rstrip("/") for u in parts if u.strip()]
    if not urls:
        raise ValueError("no API URL given")
    return urls


class _Base:
    """``url`` may name several API processes (a list, or comma-separated):
    a call that cannot reach one, or that one answers 502 or 503, goes to the
    next at once, and backs off only once it has tried them all. A predict
    carries an Idempotency-Key, so that a retry through another process gets
    the task the first one made, never a second."""

    def __init__(
        self, url: str | Sequence[str] | None = None, api_key: str | None = None,
        timeout: float = 30.0, retry_for_s: float = 30.0, retry_refused: bool = True,
        unreachable_hint: str = "",
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("TURNOUT_API_KEY") or None
        self.urls = _urls(url)
        self._at = 0
        self.timeout = timeout
        self.retry_for_s = retry_for_s
        # A refused connection is retried (an API restarting) unless told not
        # to: an operator's terminal wants the answer at once, with the hint.
        self.retry_refused = retry_refused
        self.unreachable_hint = unreachable_hint
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # Backoff waits of the last call (the tests read them).
        self.last_waits: list[float] = []

    @property
    def url(self) -> str:
        """The API process calls go to now."""
        return self.urls[self._at]

    def _backoff(self) -> Backoff:
        return Backoff(time.monotonic() + self.retry_for_s)

    def _next_try(self, error: ApiError, call: Call, backoff: Backoff) -> float | None:
        """Seconds before the next try (0: another API process, at once), or
        None: give up with ``error``."""
        if not self._retryable(error, call):
            return None
        if len(self.urls) > 1 and (isinstance(error, Unreachable)
                                   or error.status in _FAIL_OVER_STATUS):
            self._at = (self._at + 1) % len(self.urls)
            backoff.hops += 1
            if backoff.hops % len(self.urls):
                return 0.0
        return backoff.next(error)

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise error_for(response)
        body: dict[str, Any] = response.json()
        return body

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        hint = f"; {self.unreachable_hint}" if self.unreachable_hint else ""
        return Unreachable(0, f"no answer from the API at {self.url}: {exc}{hint}",
                           kind=type(exc).__name__)

    def _retryable(self, error: ApiError, call: Call) -> bool:
        if isinstance(error, Unreachable) and error.kind == "ConnectError" \
                and not self.retry_refused:
            return False
        return retryable(error, call)


# The plans, shared by both clients.


def _predict_path(model: str, version: str | None) -> str:
    return f"/v1/models/{model}/versions/{version}/predict" if version else \
        f"/v1/models/{model}/predict"


def _predict(model: str, inputs: list[Any], wait: float, version: str | None,
             route_key: str | None) -> Call:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    if route_key:
        headers["X-Route-Key"] = route_key
    return Call("POST", _predict_path(model, version), {"inputs": inputs, "wait": wait},
                headers, timeout=wait + 30)


def _batch(model: str, rows: list[Any], chunk_rows: int | None) -> Call:
    body: dict[str, Any] = {"inputs": rows}
    if chunk_rows:
        body["chunk_rows"] = chunk_rows
    return Call("POST", f"/v1/models/{model}/batch", body,
                {"Idempotency-Key": str(uuid.uuid4())}, timeout=120)


def _train(name: str, dataset: str, params: dict[str, Any] | None, seed: int | None,
           search: dict[str, list[Any]] | None) -> Call:
    body: dict[str, Any] = {"dataset": dataset}
    if params:
        body["params"] = params
    if seed is not None:
        body["seed"] = seed
    if search:
        body["search"] = search
    return Call("POST", f"/v1/models/{name}/train", body, repeatable=False)


def _promote(name: str, version: str, canary_percent: float | None, wait: float | None) -> Call:
    body: dict[str, Any] = {"version": version}
    if canary_percent is not None:
        body["canary_percent"] = canary_percent
    if wait is not None:
        body["wait"] = wait
    return Call("PUT", f"/v1/models/{name}/default", body,
                timeout=(wait if wait is not None else 60) + 30)


def _settle(view: dict[str, Any]) -> dict[str, Any]:
    if view.get("status") in ("FAILURE", "REVOKED"):
        raise TaskFailed(view)
    return view


def _poll_delay(attempt: int) -> float:
    return min(1.0, 0.05 * 2**attempt)


@contextmanager
def _progress(show: bool, model: str, total: int) -> Iterator[Callable[[int], None]]:
    if not show:
        yield lambda done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), "rows",
                  TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task(f"{model} batch", total=total)
        yield lambda done: bar.update(task, completed=done)


class Task:
    """A submitted prediction: poll it, wait for it, or revoke it."""

    def __init__(self, client: Client, body: dict[str, Any]) -> None:
        self.client = client
        self.id: str = body["task_id"]
        self.submitted = body

    def status(self) -> dict[str, Any]:
        return self.client.task(self.id)

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        """The finished task's body; TaskFailed if it failed or was revoked,
        TimeoutError if it is not done within ``timeout``."""
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            view = self.status()
            if view["status"] in FINISHED:
                return _settle(view)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} still {view['status']} after {timeout:g} s")
            time.sleep(min(_poll_delay(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1

    def cancel(self) -> dict[str, Any]:
        return self.client.call(Call("DELETE", f"/v1/tasks/{self.id}"))


class Client(_Base):
    """The synchronous client."""

    def __init__(self, url: str | Sequence[str] | None = None, api_key: str | None = None,
                 timeout: float = 30.0,
                 retry_for_s: float = 30.0, transport: httpx.BaseTransport | None = None,
                 retry_refused: bool = True, unreachable_hint: str = "") -> None:
        super().__init__(url, api_key, timeout, retry_for_s, retry_refused, unreachable_hint)
        self._http = httpx.Client(timeout=timeout, headers=self._headers, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, call: Call) -> dict[str, Any]:
        """Send a planned call, retrying what may be retried until the deadline."""
        backoff = self._backoff()
        self.last_waits = backoff.waits
        while True:
            try:
                response = self._http.request(
                    call.method, self.url + call.path, json=call.json, headers=call.headers,
                    timeout=call.timeout or self.timeout)
                return self._answer(response)
            except httpx.TransportError as exc:
                error: ApiError = self._unreachable(exc)
            except ApiError as exc:
                error = exc
            delay = self._next_try(error, call, backoff)
            if delay is None:
                raise error
            time.sleep(delay)

    # Predictions.

    def predict(self, model: str, inputs: list[Any], wait: float = 30.0,
                version: str | None = None, route_key: str | None = None) -> dict[str, Any]:
        """Predict and wait up to ``wait`` seconds; the finished task's body
        (``predictions``, ``probabilities``, ``version``, …)."""
        started = time.monotonic()
        body = self.call(_predict(model, inputs, min(wait, 60.0), version, route_key))
        if body["status"] in FINISHED:
            return _settle(body)
        left = max(0.0, wait - (time.monotonic() - started))
        return Task(self, body).result(left)

    def submit(self, model: str, inputs: list[Any], version: str | None = None,
               route_key: str | None = None) -> Task:
        """Queue a prediction and return at once; ``.result(timeout)`` waits."""
        return Task(self, self.call(_predict(model, inputs, 0, version, route_key)))

    def task(self, task_id: str) -> dict[str, Any]:
        return self.call(Call("GET", f"/v1/tasks/{task_id}"))

    def batch(self, model: str, rows: list[Any], chunk_rows: int | None = None,
              progress: bool = True, timeout: float = 3600.0) -> dict[str, Any]:
        """Run many rows as a batch job, with a progress bar; the finished
        job's body, ``predictions`` for every row in order."""
        job = self.call(_batch(model, rows, chunk_rows))
        deadline = time.monotonic() + timeout
        attempt = 0
        with _progress(progress, model, len(rows)) as show:
            while True:
                view = self.call(Call("GET", job["status_url"]))
                show(int(view.get("rows_done", 0)))
                if view["status"] in FINISHED:
                    return _settle(view)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"batch {job['batch_id']} not done after {timeout:g} s")
                time.sleep(_poll_delay(attempt))
                attempt += 1

    # The catalogue and the cluster.

    def models(self) -> list[dict[str, Any]]:
        return list(self.call(Call("GET", "/v1/models"))["models"])

    def model(self, name: str) -> dict[str, Any]:
        return self.call(Call("GET", f"/v1/models/{name}"))

    def workers(self) -> list[dict[str, Any]]:
        return list(self.call(Call("GET", "/v1/workers"))["workers"])

    def queues(self) -> list[dict[str, Any]]:
        return list(self.call(Call("GET", "/v1/queues"))["queues"])

    def devices(self) -> list[dict[str, Any]]:
        return list(self.call(Call("GET", "/v1/devices"))["devices"])

    # The lifecycle (admin keys).

    def train(self, name: str, dataset: str, params: dict[str, Any] | None = None,
              seed: int | None = None, search: dict[str, list[Any]] | None = None
              ) -> dict[str, Any]:
        return self.call(_train(name, dataset, params, seed, search))

    def training(self, job_id: str) -> dict[str, Any]:
        return self.call(Call("GET", f"/v1/training/{job_id}"))

    def cancel_training(self, job_id: str) -> dict[str, Any]:
        return self.call(Call("DELETE", f"/v1/training/{job_id}"))

    def promote(self, name: str, version: str, canary_percent: float | None = None,
                wait: float | None = None) -> dict[str, Any]:
        """Roll ``version`` out (or a canary); the body says ``"status": "loading"``
        when it is still loading after ``wait``."""
        return self.call(_promote(name, version, canary_percent, wait))

    def reload(self) -> dict[str, Any]:
        return self.call(Call("POST", "/v1/admin/reload"))


class AsyncTask:
    """``Task`` for the async client."""

    def __init__(self, client: AsyncClient, body: dict[str, Any]) -> None:
        self.client = client
        self.id: str = body["task_id"]
        self.submitted = body

    async def status(self) -> dict[str, Any]:
        return await self.client.task(self.id)

    async def result(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        attempt = 0
        while True:
            view = await self.status()
            if view["status"] in FINISHED:
                return _settle(view)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {self.id} still {view['status']} after {timeout:g} s")
            await asyncio.sleep(min(_poll_delay(attempt), max(0.0, deadline - time.monotonic())))
            attempt += 1

    async def cancel(self) -> dict[str, Any]:
        return await self.client.call(Call("DELETE", f"/v1/tasks/{self.id}"))


class AsyncClient(_Base):
    """The asyncio client: the same calls, awaited."""

    def __init__(self, url: str | Sequence[str] | None = None, api_key: str | None = None,
                 timeout: float = 30.0, retry_for_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 retry_refused: bool = True, unreachable_hint: str = "") -> None:
        super().__init__(url, api_key, timeout, retry_for_s, retry_refused, unreachable_hint)
        self._http = httpx.AsyncClient(timeout=timeout, headers=self._headers,
                                       transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(self, call: Call) -> dict[str, Any]:
        backoff = self._backoff()
        self.last_waits = backoff.waits
        while True:
            try:
                response = await self._http.request(
                    call.method, self.url + call.path, json=call.json, headers=call.headers,
                    timeout=call.timeout or self.timeout)
                return self._answer(response)
            except httpx.TransportError as exc:
                error: ApiError = self._unreachable(exc)
            except ApiError as exc:
                error = exc
            delay = self._next_try(error, call, backoff)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def predict(self, model: str, inputs: list[Any], wait: float = 30.0,
                      version: str | None = None, route_key: str | None = None
                      ) -> dict[str, Any]:
        started = time.monotonic()
        body = await self.call(_predict(model, inputs, min(wait, 60.0), version, route_key))
        if body["status"] in FINISHED:
            return _settle(body)
        left = max(0.0, wait - (time.monotonic() - started))
        return await AsyncTask(self, body).result(left)

    async def submit(self, model: str, inputs: list[Any], version: str | None = None,
                     route_key: str | None = None) -> AsyncTask:
        return AsyncTask(self, await self.call(_predict(model, inputs, 0, version, route_key)))

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self.call(Call("GET", f"/v1/tasks/{task_id}"))

    async def batch(self, model: str, rows: list[Any], chunk_rows: int | None = None,
                    progress: bool = True, timeout: float = 3600.0) -> dict[str, Any]:
        job = await self.call(_batch(model, rows, chunk_rows))
        deadline = time.monotonic() + timeout
        attempt = 0
        with _progress(progress, model, len(rows)) as show:
            while True:
                view = await self.call(Call("GET", job["status_url"]))
                show(int(view.get("rows_done", 0)))
                if view["status"] in FINISHED:
                    return _settle(view)
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"batch {job['batch_id']} not done after {timeout:g} s")
                await asyncio.sleep(_poll_delay(attempt))
                attempt += 1

    async def models(self) -> list[dict[str, Any]]:
        return list((await self.call(Call("GET", "/v1/models")))["models"])

    async def model(self, name: str) -> dict[str, Any]:
        return await self.call(Call("GET", f"/v1/models/{name}"))

    async def workers(self) -> list[dict[str, Any]]:
        return list((await self.call(Call("GET", "/v1/workers")))["workers"])

    async def queues(self) -> list[dict[str, Any]]:
        return list((await self.call(Call("GET", "/v1/queues")))["queues"])

    async def train(self, name: str, dataset: str, params: dict[str, Any] | None = None,
                    seed: int | None = None, search: dict[str, list[Any]] | None = None
                    ) -> dict[str, Any]:
        return await self.call(_train(name, dataset, params, seed, search))

    async def training(self, job_id: str) -> dict[str, Any]:
        return await self.call(Call("GET", f"/v1/training/{job_id}"))

    async def promote(self, name: str, version: str, canary_percent: float | None = None,
                      wait: float | None = None) -> dict[str, Any]:
        return await self.call(_promote(name, version, canary_percent, wait))
