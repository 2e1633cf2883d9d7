"""Model versions on a running stack: zero-downtime rollout under load, a
failed load that leaves the old version serving, rollback, pinned versions,
canaries, and versions being written that are never listed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_digits

from tests.conftest import start_redis
from tests.support.metrics import sample
from tests.support.models import add_version
from tests.support.procs import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-lifecycle.yaml"
ROW = [5.1, 3.5, 1.4, 0.2]
DIGITS = load_digits().data[:2].tolist()
# digits-cnn v1 is estimated at ~33 MiB: room for it and a 150 MiB version
# one at a time, not side by side.
LIMIT_MB = "200"


@dataclass
class Lifecycle:
    cluster: Cluster
    http: httpx.Client
    models: Path
    routes: Path

    def predict(self, model: str = "iris", **kw: Any) -> httpx.Response:
        return self.http.post(f"/v1/models/{model}/predict", json={"inputs": [ROW], "wait": 20}, **kw)

    def promote(self, model: str, version: str, **body: Any) -> httpx.Response:
        return self.http.put(f"/v1/models/{model}/default", json={"version": version, **body},
                             timeout=120)

    def describe(self, model: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/models/{model}")
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def life(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lifecycle]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    models = tmp / "models"
    for name in ("iris", "digits-cnn"):
        shutil.copytree(models_dir / name / "1", models / name / "1")
    add_version(models, "iris", "2", "iris/1", metrics={"test_accuracy": 0.99})
    routes = tmp / "routes.yaml"
    shutil.copyfile(ROUTES, routes)
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(server.settings, models, routes, tmp, extra_env={
        "TURNOUT_RETIRE_AFTER_S": "1", "TURNOUT_LIFECYCLE_POLL_S": "0.2"})
    try:
        cluster.worker("cpu", "cpu@test", "--concurrency", "2")
        cluster.worker("gpu", "gpu-cpu@test", "--device", "cpu", "--memory-limit-mb", LIMIT_MB)
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_for(lambda: len(http.get("/v1/workers").json()["workers"]) == 2, 30, "workers")
            yield Lifecycle(cluster, http, models, routes)
    finally:
        cluster.stop()
        server.stop()


def test_every_result_names_its_version_and_the_model_lists_its_versions(life: Lifecycle) -> None:
    r = life.predict()
    assert r.status_code == 200 and r.json()["version"] == "1"
    body = life.describe("iris")
    assert body["default_version"] == "1"
    listed = {v["version"]: v for v in body["versions"]}
    assert set(listed) == {"1", "2"}
    assert listed["2"]["metrics"] == {"test_accuracy": 0.99}
    assert listed["1"]["serving"] == "default"
    assert listed["1"]["workers"] == [{"name": "cpu@test", "state": "ready"}]
    assert listed["2"]["workers"] == []  # on disk, loaded nowhere
    assert life.http.get("/v1/models/nope").status_code == 404


def test_a_version_being_written_is_not_listed(life: Lifecycle) -> None:
    incoming = life.models / "iris" / ".incoming-abc"
    shutil.copytree(life.models / "iris" / "1", incoming)
    (life.models / "iris" / "7").mkdir()  # a folder with no metadata yet
    try:
        listed = [v["version"] for v in life.describe("iris")["versions"]]
        assert listed == ["1", "2"]
    finally:
        shutil.rmtree(incoming)
        (life.models / "iris" / "7").rmdir()


def test_pinned_versions_404_for_none_and_409_for_one_not_loaded(life: Lifecycle) -> None:
    r = life.http.post("/v1/models/iris/versions/9/predict", json={"inputs": [ROW]})
    assert r.status_code == 404 and "no version '9'" in r.json()["detail"]
    r = life.http.post("/v1/models/iris/versions/2/predict", json={"inputs": [ROW]})
    assert r.status_code == 409 and "no live worker has it loaded" in r.json()["detail"]
    r = life.http.post("/v1/models/iris/versions/1/predict", json={"inputs": [ROW], "wait": 20})
    assert r.status_code == 200 and r.json()["version"] == "1"
    r = life.promote("iris", "9")
    assert r.status_code == 404


def test_swap_under_load_fails_nothing_and_flips_cleanly(life: Lifecycle) -> None:
    """c=16 clients while the default goes from 1 to 2: no request fails,
    each names 1 or 2, and none sent after the flip was acknowledged is
    answered by 1."""
    stop = threading.Event()
    flipped_at: list[float] = []
    outcomes: list[tuple[float, int, str | None]] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=str(life.http.base_url), timeout=30) as http:
            while not stop.is_set():
                sent = time.monotonic()
                r = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 20})
                version = r.json().get("version") if r.status_code == 200 else None
                with lock:
                    outcomes.append((sent, r.status_code, version))

    with ThreadPoolExecutor(16) as pool:
        for _ in range(16):
            pool.submit(client)
        time.sleep(1.0)
        r = life.promote("iris", "2")
        flipped_at.append(time.monotonic())
        time.sleep(2.0)
        stop.set()
    assert r.status_code == 200, r.text
    assert r.json() == {"model": "iris", "version": "2", "previous": "1"}
    assert len(outcomes) > 100
    assert {code for _, code, _ in outcomes} == {200}
    assert {v for _, _, v in outcomes} == {"1", "2"}
    after = [v for sent, _, v in outcomes if sent > flipped_at[0]]
    assert after and set(after) == {"2"}
    body = life.describe("iris")
    assert body["default_version"] == "2" and body["previous_version"] == "1"
    # Another API process (a restart, or a second machine) follows the flip.
    proc, url = life.cluster.api()
    try:
        assert httpx.get(url + "/v1/models/iris").json()["default_version"] == "2"
        r = httpx.post(url + "/v1/models/iris/predict", json={"inputs": [ROW], "wait": 20})
        assert r.json()["version"] == "2"
    finally:
        proc.stop()
    # The old version is unloaded once nothing wants it (TURNOUT_RETIRE_AFTER_S=1).
    wait_for(lambda: not [v for v in life.describe("iris")["versions"]
                          if v["version"] == "1" and v["workers"]], 20, "version 1 unloaded")
    # Rollback, from the shell: the old version loads again and takes over.
    env = {**life.cluster.env, "TURNOUT_URL": str(life.http.base_url)}
    out = subprocess.run([sys.executable, "-m", "turnout", "models", "promote", "iris", "1"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "iris: v1 serves now (was v2)" in out.stdout
    assert life.predict().json()["version"] == "1"


def test_a_tampered_version_fails_to_load_and_the_old_one_keeps_serving(life: Lifecycle) -> None:
    folder = add_version(life.models, "iris", "3", "iris/1")
    with (folder / "model.joblib").open("ab") as fh:
        fh.write(b"tampered")
    before = life.describe("iris")["default_version"]
    r = life.promote("iris", "3")
    assert r.status_code == 409, r.text
    assert "sha256" in r.json()["detail"] and f"version '{before}' keeps serving" in r.json()["detail"]
    body = life.describe("iris")
    assert body["default_version"] == before and body["last_failure"]["version"] == "3"
    states = {v["version"]: v["workers"] for v in body["versions"]}
    assert states["3"][0]["state"] == "failed" and "refusing to load it" in states["3"][0]["reason"]
    assert life.predict().json()["version"] == before


def test_a_version_too_big_for_the_memory_limit_keeps_the_old_one(life: Lifecycle) -> None:
    add_version(life.models, "digits-cnn", "2", "digits-cnn/1", memory_mb=5000)
    r = life.promote("digits-cnn", "2")
    assert r.status_code == 409, r.text
    assert "needs ~5000 MiB" in r.json()["detail"]
    r = life.http.post("/v1/models/digits-cnn/predict", json={"inputs": DIGITS, "wait": 20})
    assert r.status_code == 200 and r.json()["version"] == "1"


def test_a_version_that_fits_only_alone_swaps_with_requests_waiting(life: Lifecycle) -> None:
    """150 MiB beside ~33 MiB does not fit in 200: the worker unloads version
    1, then loads version 3; requests meanwhile wait, and none fails."""
    add_version(life.models, "digits-cnn", "3", "digits-cnn/1", memory_mb=180)
    with ThreadPoolExecutor(4) as pool:
        promote = pool.submit(life.promote, "digits-cnn", "3")
        codes = []
        while not promote.done():
            codes.append(life.http.post("/v1/models/digits-cnn/predict",
                                        json={"inputs": DIGITS, "wait": 20}).status_code)
    assert promote.result().status_code == 200, promote.result().text
    assert codes and set(codes) == {200}
    r = life.http.post("/v1/models/digits-cnn/predict", json={"inputs": DIGITS, "wait": 20})
    assert r.json()["version"] == "3"


def test_a_canary_takes_its_share_sticks_per_key_and_waits_until_ready(life: Lifecycle) -> None:
    add_version(life.models, "iris-slow", "2", "iris/1",
                architecture_args={"load_sleep_s": 4})
    r = life.promote("iris-slow", "2", canary_percent=10, wait=0)
    assert r.status_code == 202, r.text
    # Loading: the canary gets nothing yet.
    versions = [life.http.post("/v1/models/iris-slow/predict", json={"inputs": [ROW]}).json()["version"]
                for _ in range(50)]
    assert set(versions) == {"1"}
    wait_for(lambda: life.describe("iris-slow")["canary"]["ready"], 30, "the canary loaded")

    def version_of(i: int) -> str:
        return str(life.http.post("/v1/models/iris-slow/predict", json={"inputs": [ROW]}).json()["version"])

    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(version_of, range(2000)))
    share = versions.count("2") / len(versions)
    assert 0.07 <= share <= 0.13, share
    for key in ("alice", "bob", "carol", "dave"):
        seen = {life.http.post("/v1/models/iris-slow/predict", json={"inputs": [ROW]},
                               headers={"X-Route-Key": key}).json()["version"] for _ in range(20)}
        assert len(seen) == 1, (key, seen)
    metrics = life.http.get("/metrics").text
    assert sample(metrics, "turnout_version_requests_total", model="iris-slow", version="2",
                  code="202")
    # Ending the canary: says so, and the default (and what it replaced) are as they were.
    before = life.describe("iris-slow")["previous_version"]
    r = life.promote("iris-slow", "2", canary_percent=0)
    assert r.status_code == 200 and "canary" not in r.json()
    assert r.json() == {"model": "iris-slow", "version": "1", "previous": None, "canary_ended": "2"}
    assert life.describe("iris-slow")["previous_version"] == before
    # From the shell, ending no canary says that nothing changed.
    env = {**life.cluster.env, "TURNOUT_URL": str(life.http.base_url)}
    out = subprocess.run([sys.executable, "-m", "turnout", "models", "promote", "iris-slow", "2",
                          "--canary", "0"], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 0 and "iris-slow: v1 serves (nothing changed)" in out.stdout, out.stdout


def test_the_route_table_reloads_without_a_restart_and_a_bad_one_is_refused(life: Lifecycle) -> None:
    good = life.routes.read_text()
    try:
        life.routes.write_text(good.replace("queue: cpu\n", "queue: cpux\n", 1))
        r = life.http.post("/v1/admin/reload")
        assert r.status_code == 422, r.text
        assert "models.iris.queue (line" in r.json()["detail"] and "last good one stays" in r.json()["detail"]
        assert life.predict().status_code == 200

        life.routes.write_text(good + """
  iris-b:
    framework: sklearn
    version: 1
    artifact: iris/1
    queue: cpu
    input: {kind: tabular, width: 4}
""")
        assert life.predict("iris-b").status_code == 404
        r = life.http.post("/v1/admin/reload")
        assert r.status_code == 200, r.text
        assert r.json()["added"] == ["iris-b"] and r.json()["removed"] == []
        # The workers' children load it on their next look.
        wait_for(lambda: life.predict("iris-b").status_code == 200, 30, "iris-b served")
        assert life.predict("iris-b").json()["predictions"] == ["setosa"]

        # The command does the same from the shell; iris-b goes away.
        life.routes.write_text(good)
        out = subprocess.run([sys.executable, "-m", "turnout", "reload"], check=False, env=life.cluster.env,
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "in force (generation" in out.stdout
        wait_for(lambda: life.predict("iris-b").status_code == 404, 10, "iris-b gone")
        assert life.predict().status_code == 200
    finally:
        life.routes.write_text(good)
