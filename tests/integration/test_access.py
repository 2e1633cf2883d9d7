"""API keys against a real API, Redis and worker: 401, 403, scopes, own
tasks, rate limits, revocation, open on loopback only, and no token in logs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.procs import REPO, Cluster, wait_for
from turnout.core import access
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import free_port

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes.yaml"
ROW = [5.1, 3.5, 1.4, 0.2]


@dataclass
class Guarded:
    cluster: Cluster
    url: str
    client: redis.Redis
    api_log: Path

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def guarded(redis_server: RedisSettings, models_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    # A database of its own: keys made here must not close the shared stack.
    own = RedisSettings(redis_server.host, redis_server.port, db=5, password=redis_server.password)
    client = redis.Redis.from_url(own.url)
    client.flushdb()
    cluster = Cluster(own, models_dir, ROUTES, tmp_path_factory.mktemp("access"))
    try:
        cluster.worker("cpu", "cpu@access", "--concurrency", "1")
        proc, url = cluster.api()
        yield Guarded(cluster, url, client, proc.log)
    finally:
        cluster.stop()
        client.flushdb()
        client.close()


def test_keys_scopes_and_own_tasks(guarded: Guarded) -> None:
    # No keys yet, on loopback: open.
    with guarded.http() as http:
        r = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
        assert r.status_code == 200, r.text

    _, alice = access.create(guarded.client, "alice", "predict")
    _, bob = access.create(guarded.client, "bob", "predict")
    _, root = access.create(guarded.client, "root", "admin")

    with guarded.http() as anonymous:
        # Every API process reads the keys with its live view, twice a second.
        def closed() -> httpx.Response | None:
            r = anonymous.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
            return r if r.status_code == 401 else None

        r = wait_for(closed, 5, "the API to ask for a key")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert "API key" in r.json()["detail"]
        # FastAPI's routes as well as the fast path.
        assert anonymous.get("/v1/models").status_code == 401
        # Liveness, readiness and metrics stay open.
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
    with guarded.http("tnt_not-a-key") as wrong:
        r = wrong.get("/v1/models")
        assert r.status_code == 401 and "not valid" in r.json()["detail"]
        assert r.headers["X-Turnout-Error"] == "Unauthorized"

    with guarded.http(alice) as http:
        r = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
        assert r.status_code == 200, r.text
        own_task = r.json()["task_id"]
        assert http.get(f"/v1/tasks/{own_task}").status_code == 200
        r = http.put("/v1/models/iris/default", json={"version": "1"})
        assert r.status_code == 403, r.text
        assert "scope 'predict'" in r.json()["detail"] and "'admin'" in r.json()["detail"]
        assert http.post("/v1/admin/reload").status_code == 403
        assert http.get("/v1/admin/keys").status_code == 403
    with guarded.http(bob) as http:
        # Another predict key does not see alice's task.
        assert http.get(f"/v1/tasks/{own_task}").status_code == 404
        assert http.delete(f"/v1/tasks/{own_task}").status_code == 404
    with guarded.http(root) as http:
        assert http.get(f"/v1/tasks/{own_task}").status_code == 200
        r = http.post("/v1/admin/reload")
        assert r.status_code == 200, r.text
        listed = http.get("/v1/admin/keys").json()["keys"]
        assert [k["name"] for k in listed] == ["alice", "bob", "root"]
        assert not any("hash" in k or "token" in k for k in listed)

    # Revoked: refused within a refresh, in this process and any other.
    assert access.revoke(guarded.client, "bob")
    with guarded.http(bob) as http:
        wait_for(lambda: http.get("/v1/models").status_code == 401, 5, "bob refused")

    # No token, nor its hash, ever reaches the API's log.
    log = guarded.api_log.read_text()
    for token in (alice, bob, root, access.hash_token(alice)):
        assert token not in log


def test_keys_over_http_and_a_rate_limit(guarded: Guarded) -> None:
    _, root = access.create(guarded.client, "ops", "admin")
    with guarded.http(root) as http:
        r = http.post("/v1/admin/keys", json={"name": "slow", "scope": "predict", "rate_per_s": 2})
        assert r.status_code == 201, r.text
        slow = r.json()["token"]
        assert http.post("/v1/admin/keys", json={"name": "slow"}).status_code == 409
        assert http.post("/v1/admin/keys", json={"name": "no/slash"}).status_code == 422
        assert http.post("/v1/admin/keys", json={"name": "x", "scope": "root"}).status_code == 422
    with guarded.http(slow) as http:
        codes = [http.post("/v1/models/iris/predict", json={"inputs": [ROW]}) for _ in range(6)]
    assert [c.status_code for c in codes[:2]] == [202, 202]
    limited = [c for c in codes if c.status_code == 429]
    assert limited, [c.status_code for c in codes]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert "limited to 2 requests a second" in limited[0].json()["detail"]
    with guarded.http(root) as http:
        assert http.delete("/v1/admin/keys/slow").status_code == 200
        assert http.delete("/v1/admin/keys/slow").status_code == 404


def test_a_key_may_be_capped_to_a_priority(guarded: Guarded) -> None:
    _, root = access.create(guarded.client, "lanes-ops", "admin")
    with guarded.http(root) as http:
        r = http.post("/v1/admin/keys", json={"name": "nightly", "max_priority": "low"})
        assert r.status_code == 201, r.text
        nightly = r.json()["token"]
        bad = http.post("/v1/admin/keys", json={"name": "odd", "max_priority": "urgent"})
        assert bad.status_code == 422 and "urgent" in bad.json()["detail"]
        listed = {k["name"]: k for k in http.get("/v1/admin/keys").json()["keys"]}
        assert listed["nightly"]["max_priority"] == "low"
    with guarded.http(nightly) as http:
        # Asking above the cap is refused, naming the cap; the endpoint's
        # default comes down to it.
        high = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "priority": "high"})
        assert high.status_code == 403, high.text
        assert "'low' at most" in high.json()["detail"]
        plain = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 30})
        assert plain.status_code == 200 and plain.json()["status"] == "SUCCESS", plain.text
        batch = http.post("/v1/models/iris/batch", json={"inputs": [ROW] * 3})
        assert batch.status_code == 202, batch.text
        assert http.get(batch.json()["status_url"]).json()["priority"] == "low"
        normal = http.post("/v1/models/iris/batch", json={"inputs": [ROW], "priority": "normal"})
        assert normal.status_code == 403
    with guarded.http(root) as http:
        # An uncapped key may ask for any lane.
        ok = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "priority": "high"})
        assert ok.status_code == 202, ok.text


def test_idempotency_key_gives_the_same_task(guarded: Guarded) -> None:
    _, token = access.create(guarded.client, "idem", "predict")
    with guarded.http(token) as http:
        headers = {"Idempotency-Key": "order-42"}
        first = http.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=headers)
        assert first.status_code == 202, first.text
        again = http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10},
                          headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["task_id"] == first.json()["task_id"]
        assert again.json()["status"] == "SUCCESS"
        other = http.post("/v1/models/digits-cnn/predict", json={"inputs": [[0] * 64]},
                          headers=headers)
        assert other.status_code == 409 and "model 'iris'" in other.json()["detail"]
        bad = http.post("/v1/models/iris/predict", json={"inputs": [ROW]},
                        headers={"Idempotency-Key": "x" * 300})
        assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]
        batch = {"inputs": [ROW] * 10}
        b1 = http.post("/v1/models/iris/batch", json=batch, headers={"Idempotency-Key": "b-1"})
        b2 = http.post("/v1/models/iris/batch", json=batch, headers={"Idempotency-Key": "b-1"})
        assert b1.status_code == b2.status_code == 202
        assert b1.json()["batch_id"] == b2.json()["batch_id"]
    # Per key: the same Idempotency-Key from another key is another request.
    _, other_token = access.create(guarded.client, "idem2", "predict")
    with guarded.http(other_token) as http:
        r = http.post("/v1/models/iris/predict", json={"inputs": [ROW]}, headers=headers)
        assert r.status_code == 202 and r.json()["task_id"] != first.json()["task_id"]


def test_the_api_refuses_a_public_address_without_keys(
    redis_server: RedisSettings, models_dir: Path, tmp_path: Path
) -> None:
    own = RedisSettings(redis_server.host, redis_server.port, db=6, password=redis_server.password)
    client = redis.Redis.from_url(own.url)
    client.flushdb()
    cluster = Cluster(own, models_dir, ROUTES, tmp_path)
    try:
        port = free_port()
        refused = subprocess.run(
            [sys.executable, "-m", "turnout", "api", "--host", "0.0.0.0", "--port", str(port)],
            env=cluster.env, cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )
        assert refused.returncode == 2
        assert "refusing to serve the API on 0.0.0.0 with no API keys" in refused.stderr
        assert "turnout keys create" in refused.stderr and "--insecure-no-auth" in refused.stderr
        # On purpose, it starts.
        p = cluster.spawn("api-open", "api", "--host", "0.0.0.0", "--port", str(port),
                          "--insecure-no-auth")
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code
                 == 200, 60, "the open API", p.proc, p.log)
        p.stop()
        # With a key, it starts without being told, and asks for the key.
        access.create(client, "k", "predict")
        port = free_port()
        p = cluster.spawn("api-keyed", "api", "--host", "0.0.0.0", "--port", str(port))
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code
                 == 200, 60, "the keyed API", p.proc, p.log)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        # Revoking every key does not open a public API.
        access.revoke(client, "k")
        time.sleep(1.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
    finally:
        cluster.stop()
        client.flushdb()
        client.close()


def test_loopback_stays_closed_once_the_last_key_is_revoked_until_reopened(
        guarded: Guarded) -> None:
    _, token = access.create(guarded.client, "last", "predict")
    for key in access.list_keys(guarded.client):
        access.revoke(guarded.client, key.name)
    assert access.list_keys(guarded.client) == []
    with guarded.http(token) as revoked, guarded.http() as anonymous:
        # Keys were made here: with none left, no one gets in, the revoked token least of all.
        time.sleep(1.2)  # two refreshes of the API's view
        assert revoked.get("/v1/models").status_code == 401
        assert anonymous.get("/v1/models").status_code == 401
        listed = subprocess.run([sys.executable, "-m", "turnout", "keys", "list"],
                                env=guarded.cluster.env, cwd=REPO, capture_output=True,
                                text=True, timeout=60, check=False)
        assert "the API is closed" in listed.stdout and "turnout keys reopen" in listed.stdout
        # Reopened on purpose: open on loopback again.
        reopened = subprocess.run([sys.executable, "-m", "turnout", "keys", "reopen"],
                                  env=guarded.cluster.env, cwd=REPO, capture_output=True,
                                  text=True, timeout=60, check=False)
        assert reopened.returncode == 0, reopened.stderr
        wait_for(lambda: anonymous.get("/v1/models").status_code == 200, 5, "open again")
