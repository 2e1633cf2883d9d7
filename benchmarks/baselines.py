"""The designs Turnout is measured against, each behind the same HTTP server
(FastAPI on uvicorn, one process) and taking the same request body:

- ``floor``: the model called in the handler, no queue: what HTTP alone costs;
- ``tutorial``: the usual Celery tutorial: ``task.delay()`` then a blocking
  ``.get()`` in a sync handler (FastAPI runs it in its thread pool);
- ``handwritten``: a hand-written Redis list queue whose workers pop small
  batches: no acknowledgements, no retries, no redelivery.

Run as ``python -m turnout.benchmarks.baselines {floor|tutorial|handwritten} api|worker``;
the broker comes from BENCH_BROKER_URL, the model from BENCH_MODELS_DIR.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

# At the top, not in the functions: FastAPI resolves the handlers' annotations
# (strings, under `from __future__ import annotations`) in this module's globals.
from fastapi import FastAPI, Request

ROUTE = "/v1/models/iris/predict"


def _load_iris() -> Any:
    import joblib

    return joblib.load(Path(os.environ["BENCH_MODELS_DIR"]) / "iris" / "1" / "model.joblib")


def _predict(model: Any, rows: list[list[float]]) -> dict[str, Any]:
    import numpy as np

    proba = model.predict_proba(np.asarray(rows, dtype=np.float64))
    labels = model.classes_[np.argmax(proba, axis=1)]
    return {"predictions": labels.tolist(), "probabilities": proba.tolist()}


def _serve(app: Any) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning",
                access_log=False)


# -- the floor -----------------------------------------------------------------


def floor_api() -> None:
    app = FastAPI()
    model = _load_iris()

    @app.post(ROUTE)
    async def predict(request: Request) -> dict[str, Any]:
        body = json.loads(await request.body())
        return {"status": "SUCCESS", **_predict(model, body["inputs"])}

    _serve(app)


# -- the Celery tutorial ---------------------------------------------------------


def tutorial_celery() -> Any:
    from celery import Celery, signals

    url = os.environ["BENCH_BROKER_URL"]
    app = Celery("tutorial", broker=url, backend=url)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_default_queue="tutorial", worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    state: dict[str, Any] = {}

    def _load(**_: Any) -> None:
        state["model"] = _load_iris()

    signals.worker_process_init.connect(_load, weak=False)

    @app.task(name="tutorial.predict")
    def predict(rows: list[list[float]]) -> dict[str, Any]:
        return _predict(state["model"], rows)

    return app


app = tutorial_celery() if os.environ.get("BENCH_TUTORIAL") else None  # for `celery -A`


def tutorial_api() -> None:
    celery = tutorial_celery()
    task = celery.tasks["tutorial.predict"]
    app = FastAPI()

    @app.post(ROUTE)
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        # The tutorial's shape: a plain def handler, blocking on the result.
        result = task.delay(body["inputs"]).get(timeout=30)
        return {"status": "SUCCESS", **result}

    _serve(app)


# -- a hand-written Redis list queue -----------------------------------------------

JOBS = "hw:jobs"
BATCH = 64


def handwritten_api() -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(os.environ["BENCH_BROKER_URL"], max_connections=1024)
    app = FastAPI()

    @app.post(ROUTE)
    async def predict(request: Request) -> dict[str, Any]:
        body = json.loads(await request.body())
        job_id = uuid.uuid4().hex
        await client.lpush(JOBS, json.dumps({"id": job_id, "rows": body["inputs"]}))
        reply = await client.blpop([f"hw:reply:{job_id}"], timeout=30)
        if reply is None:
            return {"status": "FAILURE"}
        return {"status": "SUCCESS", **json.loads(reply[1])}

    _serve(app)


def handwritten_worker() -> None:
    import redis

    client = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])
    model = _load_iris()
    while True:
        first = client.brpop([JOBS], timeout=1)
        if first is None:
            continue
        more: list[bytes] = client.rpop(JOBS, BATCH - 1) or []  # type: ignore[assignment]
        jobs = [json.loads(first[1])] + [json.loads(m) for m in more]
        rows = [row for job in jobs for row in job["rows"]]
        out = _predict(model, rows)
        pipe = client.pipeline(transaction=False)
        start = 0
        for job in jobs:
            end = start + len(job["rows"])
            reply = {k: v[start:end] for k, v in out.items()}
            key = f"hw:reply:{job['id']}"
            pipe.lpush(key, json.dumps(reply))
            pipe.expire(key, 60)
            start = end
        pipe.execute()


def main(argv: list[str]) -> None:
    kind, part = argv
    {
        ("floor", "api"): floor_api,
        ("tutorial", "api"): tutorial_api,
        ("handwritten", "api"): handwritten_api,
        ("handwritten", "worker"): handwritten_worker,
    }[(kind, part)]()


if __name__ == "__main__":
    main(sys.argv[1:])
