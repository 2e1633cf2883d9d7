"""The messages Turnout's processes send each other, typed, each with its JSON.

- ``RequestItem``: one client request inside a predict task's arguments
  (router -> worker, through the broker).
- ``Outcome`` and ``TaskResult``: what a worker answers for a task, one
  outcome per request, in order (worker -> router, in the result backend).
- ``ResultDoc``: the document Celery's Redis result backend keeps for a task,
  which carries a ``TaskResult`` on success; built and read only here.
- ``Heartbeat``: what a live worker says about itself every second or so
  (worker -> router, ``turnout status``, the metrics).

Each is parsed once, where it arrives (``from_wire``/``decode``), and written
once, where it leaves (``to_wire``/``encode``); nothing else reads these
documents by string key. Plain dataclasses with hand-written codecs: a request
item is built and read once per request on the hot path, where a validating
model would cost more than the rest of the message.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from turnout.core.errors import TurnoutError

# A version's state on a worker, as its heartbeat reports it.
LOADING, READY, FAILED = "loading", "ready", "failed"

# Celery's states (result documents) that end a task.
READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})


class MessageError(TurnoutError):
    """A message that no version of Turnout wrote (a positional request, a
    heartbeat without a name): refused where it arrives, naming what was wrong."""


def _need(raw: Mapping[str, Any], name: str, what: str) -> Any:
    try:
        return raw[name]
    except KeyError:
        raise MessageError(f"{what} has no {name!r}") from None
    except TypeError:
        raise MessageError(f"{what} is a {type(raw).__name__}, not an object") from None


# -- requests and results ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestItem:
    """One client request in a predict task: its id (the task id the client
    holds), its validated rows, and when the router accepted it (epoch s)."""

    id: str
    rows: list[Any]
    submitted_at: float
    # When it must have started by, on Redis's clock (epoch s); None: never
    # too late. A worker compares it with Redis's TIME, never its own clock.
    deadline: float | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {"id": self.id, "rows": self.rows, "submitted_at": self.submitted_at}
        if self.deadline is not None:
            out["deadline"] = self.deadline
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> RequestItem:
        if not isinstance(raw, Mapping):
            raise MessageError(
                f"a request item must be an object with id, rows and submitted_at, "
                f"not a {type(raw).__name__}"
            )
        deadline = raw.get("deadline")
        return cls(str(_need(raw, "id", "a request item")), list(_need(raw, "rows", "a request item")),
                   float(_need(raw, "submitted_at", "a request item")),
                   None if deadline is None else float(deadline))


@dataclass(slots=True)
class Outcome:
    """What one request got: predictions (and probabilities), or an error, or
    nothing because it was revoked before its task ran."""

    predictions: list[Any] | None = None
    probabilities: list[Any] | None = None
    error: str | None = None
    revoked: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    # How many times its rows were split to fit device memory.
    oom_splits: int = 0

    def to_wire(self) -> dict[str, Any]:
        if self.revoked:
            return {"revoked": True}
        out: dict[str, Any] = {}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["predictions"] = self.predictions
            if self.probabilities is not None:
                out["probabilities"] = self.probabilities
        if self.timings_ms:
            out["timings_ms"] = self.timings_ms
        if self.oom_splits:
            out["oom_splits"] = self.oom_splits
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Outcome:
        return cls(
            predictions=raw.get("predictions"),
            probabilities=raw.get("probabilities"),
            error=raw.get("error"),
            revoked=bool(raw.get("revoked", False)),
            timings_ms=dict(raw.get("timings_ms") or {}),
            oom_splits=int(raw.get("oom_splits") or 0),
        )


@dataclass(slots=True)
class TaskResult:
    """A worker's answer for one predict task: an outcome per request, in the
    order of the task's request items, and where it ran."""

    outcomes: list[Outcome]
    worker: str
    device: str
    version: str
    batch_size: int
    rows: int
    # A pipeline's or ensemble's: where each step ran, and how long it took
    # (turnout.core.flows.step_record).
    steps: list[dict[str, Any]] | None = None

    def to_wire(self) -> dict[str, Any]:
        out = {
            "results": [o.to_wire() for o in self.outcomes],
            "worker": self.worker,
            "device": self.device,
            "batch_size": self.batch_size,
            "rows": self.rows,
            "version": self.version,
        }
        if self.steps is not None:
            out["steps"] = self.steps
        return out

    @classmethod
    def from_wire(cls, raw: Any) -> TaskResult:
        if not isinstance(raw, Mapping):
            raise MessageError(f"a task result is a {type(raw).__name__}, not an object")
        return cls(
            outcomes=[Outcome.from_wire(o) for o in raw.get("results") or ()],
            worker=str(raw.get("worker") or ""),
            device=str(raw.get("device") or ""),
            version=str(raw.get("version") or ""),
            batch_size=int(raw.get("batch_size") or 1),
            rows=int(raw.get("rows") or 0),
            steps=list(raw["steps"]) if isinstance(raw.get("steps"), list) else None,
        )

    def outcome(self, index: int) -> Outcome:
        if 0 <= index < len(self.outcomes):
            return self.outcomes[index]
        return Outcome(error="no result for it")


def _now_iso() -> str:
    # One format for every document Turnout writes, as Celery's own backend
    # writes date_done (datetime.isoformat() of an aware UTC time).
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())


@dataclass(slots=True)
class ResultDoc:
    """A task's state as Celery's Redis result backend writes it: the same
    key (``celery-task-meta-<id>``), the same document, the same channel."""

    task_id: str
    status: str
    result: Any = None
    date_done: str | None = None

    @classmethod
    def started(cls, task_id: str, pid: int, hostname: str) -> ResultDoc:
        return cls(task_id, "STARTED", {"pid": pid, "hostname": hostname})

    @classmethod
    def success(cls, task_id: str, result: TaskResult) -> ResultDoc:
        return cls(task_id, "SUCCESS", result.to_wire(), _now_iso())

    @classmethod
    def revoked(cls, task_id: str) -> ResultDoc:
        return cls(task_id, "REVOKED", None, _now_iso())

    def encode(self) -> bytes:
        # orjson: a batch of embeddings is hundreds of kB of floats, which the
        # stdlib encodes ten times slower.
        return orjson.dumps({
            "status": self.status,
            "result": self.result,
            "traceback": None,
            "children": [],
            "date_done": self.date_done,
            "task_id": self.task_id,
        })

    @classmethod
    def decode(cls, raw: bytes | str | None) -> ResultDoc | None:
        if not raw:
            return None
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise MessageError("a result document is not an object")
        return cls(str(data.get("task_id") or ""), str(data.get("status") or "PENDING"),
                   data.get("result"), data.get("date_done"))

    @property
    def ready(self) -> bool:
        return self.status in READY_STATES

    def task_result(self) -> TaskResult:
        """The worker's answer (a SUCCESS document's ``result``)."""
        return TaskResult.from_wire(self.result or {})

    def outcome(self, index: int) -> tuple[Outcome, TaskResult]:
        """Request ``index``'s outcome, and where the task ran (a TaskResult
        without its outcomes): each waiter of a batch parses its own entry
        only, not the whole batch's."""
        raw = self.result if isinstance(self.result, Mapping) else {}
        entries = raw.get("results") or ()
        entry = (Outcome.from_wire(entries[index]) if 0 <= index < len(entries)
                 else Outcome(error="no result for it"))
        return entry, TaskResult.from_wire({**raw, "results": ()})

    def error_text(self) -> str:
        """A FAILURE's error in words: Celery stores it as {exc_type,
        exc_message, exc_module}."""
        result = self.result
        if isinstance(result, dict) and result.get("exc_type") == "TimeLimitExceeded":
            # The pool killed the job's process at the hard limit (the job had
            # ignored the soft one): say so in the words of the soft limit's error.
            limit = result.get("exc_message")
            if isinstance(limit, list | tuple):
                limit = limit[0] if limit else "?"
            return (f"TaskTimeout: the job ran past its hard time limit of {limit} s; "
                    "its worker process was replaced")
        if isinstance(result, dict) and "exc_type" in result:
            message = result.get("exc_message")
            if isinstance(message, list | tuple):
                message = " ".join(str(m) for m in message)
            return f"{result['exc_type']}: {message}" if message else str(result["exc_type"])
        return str(result)


# -- heartbeats ----------------------------------------------------------------


def serves(models: Collection[str], ready: Collection[str], model: str,
           version: str | None = None) -> bool:
    """The one definition of "this worker serves this model (and version)":
    the worker holds the model (``models``, from its heartbeat), and, when a
    version is named, has that version ready (``ready``)."""
    return model in models and (version is None or version in ready)


@dataclass(frozen=True, slots=True)
class VersionState:
    """One version of a model on one worker."""

    state: str  # LOADING, READY or FAILED
    reason: str | None = None
    # The serving document's generation a failure was for (retried for a newer one).
    generation: int = 0

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.generation:
            out["generation"] = self.generation
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> VersionState:
        return cls(str(raw.get("state") or LOADING), raw.get("reason"),
                   int(raw.get("generation") or 0))


@dataclass(frozen=True, slots=True)
class GpuFigures:
    """NVML's figures for a worker's device; a field NVML could not give is None."""

    uuid: str | None = None
    index: int | None = None
    name: str | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    memory_free_mb: float | None = None
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any] | None) -> GpuFigures | None:
        if not raw:
            return None
        return cls(**{k: raw.get(k) for k in cls.__slots__})


@dataclass(frozen=True, slots=True)
class CurrentTask:
    """A task a worker's pool child is running now."""

    task_id: str
    model: str
    since: float
    rows: int | None = None
    requests: int | None = None
    # A training trial: its job, and which trial of it.
    training: str | None = None
    trial: int | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_id": self.task_id, "model": self.model, "since": self.since}
        for name in ("rows", "requests", "training", "trial"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> CurrentTask:
        return cls(str(raw.get("task_id") or ""), str(raw.get("model") or ""),
                   float(raw.get("since") or 0.0), raw.get("rows"), raw.get("requests"),
                   raw.get("training"), raw.get("trial"))


@dataclass(frozen=True, slots=True)
class ChildState:
    """One pool child of a worker, as the heartbeat shows it."""

    pid: int
    ready: bool
    memory: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid, "ready": self.ready, "memory": self.memory}


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A live worker, as it describes itself. Every field is always present on
    the wire; those that do not apply to a worker's kind are null."""

    name: str
    incarnation: str
    kind: str  # cpu, gpu or train
    queues: tuple[str, ...]
    device: str  # "cpu", or the device label of a GPU worker ("cuda:0")
    concurrency: int
    host: str
    pid: int
    started_at: float
    # Models with some version ready here, and those refused (with the reason).
    models: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)
    versions: dict[str, dict[str, VersionState]] = field(default_factory=dict)
    reloading: bool = False
    busy: int = 0
    current_tasks: tuple[CurrentTask, ...] = ()
    children: tuple[ChildState, ...] = ()
    # GPU workers: the device index it is pinned to and CUDA_VISIBLE_DEVICES
    # as it set it before torch loaded; null for CPU and training workers.
    gpu_index: int | None = None
    cuda_visible_devices: str | None = None
    memory_limit_mb: float | None = None
    # NVML's figures (null without NVML or on the CPU), and why not.
    gpu: GpuFigures | None = None
    telemetry: str | None = None
    # When it was sent, on the worker's clock.
    ts: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "incarnation": self.incarnation,
            "kind": self.kind,
            "queues": list(self.queues),
            "device": self.device,
            "concurrency": self.concurrency,
            "host": self.host,
            "pid": self.pid,
            "started_at": self.started_at,
            "models": list(self.models),
            "refused": dict(self.refused),
            "versions": {m: {v: s.to_wire() for v, s in vs.items()}
                         for m, vs in self.versions.items()},
            "reloading": self.reloading,
            "busy": self.busy,
            "current_tasks": [t.to_wire() for t in self.current_tasks],
            "children": [c.to_wire() for c in self.children],
            "gpu_index": self.gpu_index,
            "cuda_visible_devices": self.cuda_visible_devices,
            "memory_limit_mb": self.memory_limit_mb,
            "gpu": self.gpu.to_wire() if self.gpu is not None else None,
            "telemetry": self.telemetry,
            "ts": self.ts,
        }

    def encode(self) -> bytes:
        return orjson.dumps(self.to_wire())

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> Heartbeat:
        what = "a heartbeat"
        return cls(
            name=str(_need(raw, "name", what)),
            incarnation=str(raw.get("incarnation") or ""),
            kind=str(raw.get("kind") or ""),
            queues=tuple(raw.get("queues") or ()),
            device=str(raw.get("device") or ""),
            concurrency=int(raw.get("concurrency") or 1),
            host=str(raw.get("host") or ""),
            pid=int(raw.get("pid") or 0),
            started_at=float(raw.get("started_at") or 0.0),
            models=tuple(raw.get("models") or ()),
            refused={str(k): str(v) for k, v in (raw.get("refused") or {}).items()},
            versions={
                str(m): {str(v): VersionState.from_wire(s) for v, s in vs.items()}
                for m, vs in (raw.get("versions") or {}).items()
            },
            reloading=bool(raw.get("reloading", False)),
            busy=int(raw.get("busy") or 0),
            current_tasks=tuple(CurrentTask.from_wire(t) for t in raw.get("current_tasks") or ()),
            children=tuple(
                ChildState(int(c.get("pid") or 0), bool(c.get("ready")), dict(c.get("memory") or {}))
                for c in raw.get("children") or ()
            ),
            gpu_index=raw.get("gpu_index"),
            cuda_visible_devices=raw.get("cuda_visible_devices"),
            memory_limit_mb=raw.get("memory_limit_mb"),
            gpu=GpuFigures.from_wire(raw.get("gpu")),
            telemetry=raw.get("telemetry"),
            ts=float(raw.get("ts") or 0.0),
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> Heartbeat:
        data = orjson.loads(raw)
        if not isinstance(data, dict):
            raise MessageError("a heartbeat is not an object")
        return cls.from_wire(data)

    # -- what it says -------------------------------------------------------

    def version_states(self, model: str) -> dict[str, VersionState]:
        return dict(self.versions.get(model) or {})

    def ready_versions(self, model: str) -> frozenset[str]:
        return frozenset(v for v, s in (self.versions.get(model) or {}).items()
                         if s.state == READY)

    def serves(self, model: str, version: str | None = None) -> bool:
        return serves(self.models, self.ready_versions(model), model, version)

    @property
    def device_queue(self) -> str | None:
        """The queue of the one device this worker is pinned to (``gpu.<i>``)."""
        return f"gpu.{self.gpu_index}" if self.gpu_index is not None else None
