"""Flower against a real stack: behind basic auth, it shows Turnout's tasks
(sent by the router, received, started and finished by the worker) with
their state, worker, queue and runtime; and in a real browser.

The stack runs with monitoring off, as a production stack would: starting
`turnout flower` is what turns task events on, in the workers (Flower's
enable_events) and in the API (the monitoring key)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.procs import REPO, Cluster, wait_for
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import free_port

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes.yaml"
ROW = [5.1, 3.5, 1.4, 0.2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Monitored:
    api: str
    flower: str
    auth: tuple[str, str]
    tasks: dict[str, Any]
    tmp: Path
    redis_password: str


@pytest.fixture(scope="module")
def monitored(redis_server: RedisSettings, models_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    own = RedisSettings(redis_server.host, redis_server.port, db=8, password=redis_server.password)
    tmp = tmp_path_factory.mktemp("flower")
    cluster = Cluster(own, models_dir, ROUTES, tmp)
    cluster.client.flushdb()
    try:
        cluster.worker("cpu", "cpu@flower", "--concurrency", "1")
        _, api = cluster.api()
        port = free_port()
        flower = cluster.spawn("flower", "flower", "--port", str(port))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url + "/healthcheck", timeout=2).status_code == 200, 60,
                 "Flower", flower.proc, flower.log)
        password = (tmp / "home" / "flower.password").read_text().strip()

        def succeeded() -> list[Any]:
            tasks = httpx.get(url + "/api/tasks", auth=("turnout", password), timeout=5).json()
            return [t for t in tasks.values() if t.get("state") == "SUCCESS"]

        with httpx.Client(base_url=api, timeout=30) as http:
            # Flower turns the workers' task events on at its first tick (5 s
            # after it starts); until then a task shows as sent only.
            def events_on() -> bool:
                http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
                time.sleep(0.5)
                return bool(succeeded())

            wait_for(events_on, 30, "task events to be on")
            before = len(succeeded())
            for _ in range(12):
                r = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
                assert r.status_code == 200, r.text

        def all_seen() -> dict[str, Any] | None:
            tasks = httpx.get(url + "/api/tasks", auth=("turnout", password), timeout=5).json()
            done = [t for t in tasks.values() if t.get("state") == "SUCCESS"]
            return tasks if len(done) >= before + 12 else None

        tasks = wait_for(all_seen, 30, "Flower to list the tasks", flower.proc, flower.log)
        yield Monitored(api, url, ("turnout", password), tasks, tmp, own.password or "")
    finally:
        cluster.client.flushdb()
        cluster.stop()


def test_flower_is_behind_basic_auth(monitored: Monitored) -> None:
    assert httpx.get(monitored.flower + "/api/tasks", timeout=5).status_code == 401
    wrong = httpx.get(monitored.flower + "/api/tasks", auth=("turnout", "nope"), timeout=5)
    assert wrong.status_code == 401
    kept = monitored.tmp / "home" / "flower.password"
    assert kept.stat().st_mode & 0o777 == 0o600
    # Neither secret is in any log (Flower's banner masks the broker's).
    for log in monitored.tmp.glob("*.log"):
        text = log.read_text()
        assert monitored.auth[1] not in text and monitored.redis_password not in text, log


def test_flower_lists_turnouts_tasks_from_sent_to_success(monitored: Monitored) -> None:
    tasks = [t for t in monitored.tasks.values() if t.get("state") == "SUCCESS"]
    assert len(tasks) >= 12
    for task in tasks:
        assert task["name"] == "turnout.predict"
        assert task["worker"] == "cpu@flower"
        assert task["runtime"] is not None and task["runtime"] >= 0
        # task-sent came from the router, in the round trip that queued it.
        assert task["sent"] and task["received"] and task["started"] and task["succeeded"]
        assert task["sent"] <= task["received"] + 1
        assert task["routing_key"] == "cpu"
        # Short, and free of the rows.
        assert task["args"] == "('iris', 1 request(s))"
        assert "5.1" not in str(task["args"]) + str(task["kwargs"])


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (Debian: apt-get "
                    "install chromium); the browser check of Flower's tasks page is skipped")
def test_flowers_tasks_page_in_a_real_browser(monitored: Monitored, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    user, password = monitored.auth
    page = monitored.flower.replace("http://", f"http://{user}:{password}@") + "/tasks"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=8000", "--window-size=1400,900"]
    shot = tmp_path / "flower-tasks.png"
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120, check=False)
    assert "turnout.predict" in dom.stdout, dom.stderr[-2000:]
    assert "cpu@flower" in dom.stdout
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=120,
                   check=False)
    assert shot.exists() and shot.stat().st_size > 10_000
    # TURNOUT_KEEP_SCREENSHOT=1 refreshes the README's picture.
    if os.environ.get("TURNOUT_KEEP_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "flower-tasks.png")
