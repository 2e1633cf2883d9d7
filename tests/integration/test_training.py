"""Training jobs on a running stack, with a real training worker: progress
that only goes up, a registered version that is never promoted, the same
seed giving the same artifact, cancel registering nothing, a search that
survives a poisoned trial, and inference answered while training runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import start_redis
from tests.support.procs import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-lifecycle.yaml"
ROW = [5.1, 3.5, 1.4, 0.2]


@dataclass
class TrainStack:
    cluster: Cluster
    http: httpx.Client
    models: Path
    data: Path
    faults: Path

    def train(self, model: str, **body: Any) -> str:
        r = self.http.post(f"/v1/models/{model}/train", json=body)
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/v1/training/{r.json()['job_id']}"
        return str(r.json()["job_id"])

    def status(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/training/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(self, job_id: str, timeout: float = 120) -> tuple[dict[str, Any], list[float]]:
        """The job's final view, and every percent seen on the way."""
        seen: list[float] = []

        def finished() -> dict[str, Any] | None:
            view = self.status(job_id)
            seen.append(float(view["progress"]["percent"]))
            return view if view["status"] in ("SUCCESS", "FAILURE", "REVOKED") else None

        return wait_for(finished, timeout, f"training job {job_id}"), seen

    def meta(self, model: str, version: str) -> dict[str, Any]:
        return dict(json.loads((self.models / model / version / "meta.json").read_text()))


@pytest.fixture(scope="module")
def trainer(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainStack]:
    tmp = tmp_path_factory.mktemp("training")
    models = tmp / "models"
    for name in ("iris", "digits-cnn"):
        shutil.copytree(models_dir / name / "1", models / name / "1")
    data = tmp / "data"
    data.mkdir()
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    faults = tmp / "faults"
    faults.mkdir()
    cluster = Cluster(server.settings, models, ROUTES, tmp,
                      extra_env={"TURNOUT_DATA_DIR": str(data), "TURNOUT_FAULT_DIR": str(faults),
                                 "TURNOUT_LEDGER": "1"})
    try:
        cluster.worker("cpu", "cpu@test", "--concurrency", "1")
        cluster.worker("train", "train-cpu@test", "--device", "cpu")
        _, url = cluster.api()
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_for(lambda: len(http.get("/v1/workers").json()["workers"]) == 2, 30, "workers")
            yield TrainStack(cluster, http, models, data, faults)
    finally:
        cluster.stop()
        server.stop()


def test_bad_requests_name_what_is_wrong(trainer: TrainStack) -> None:
    cases = [
        ({"dataset": "nope"}, 404, "no dataset 'nope'"),
        ({"dataset": "../etc/passwd"}, 422, "expected a dataset name"),
        ({"dataset": "iris", "params": {"C": -1}}, 422, "params.C: expected > 0"),
        ({"dataset": "iris", "params": {"lr": 0.1}}, 422, "params.lr: unknown for sklearn"),
        ({"dataset": "iris", "search": {"C": []}}, 422, "search.C: expected a non-empty list"),
        ({"params": {}}, 422, "dataset: required"),
    ]
    for body, code, words in cases:
        r = trainer.http.post("/v1/models/iris/train", json=body)
        assert r.status_code == code, (body, r.text)
        assert words in r.json()["detail"], (body, r.text)
    assert trainer.http.post("/v1/models/nope/train", json={"dataset": "iris"}).status_code == 404
    assert trainer.http.get("/v1/training/not-a-uuid").status_code == 404


def test_a_trained_version_is_registered_with_its_metrics_and_never_promoted(trainer: TrainStack) -> None:
    job = trainer.train("iris", dataset="iris", seed=7, params={"C": 0.5})
    view, seen = trainer.wait(job)
    assert view["status"] == "SUCCESS", view
    assert seen == sorted(seen), seen  # progress only goes up
    assert view["progress"] == {"stage": "registered", "percent": 100.0}
    version = view["version"]
    meta = trainer.meta("iris", version)
    assert meta["params"]["C"] == 0.5 and meta["seed"] == 7 and meta["training_job"] == job
    assert meta["dataset"]["name"] == "iris" and len(meta["dataset"]["sha256"]) == 64
    assert meta["code_version"].startswith("0.1.0")
    assert 0.8 <= meta["metrics"]["test_accuracy"] <= 1.0
    model = trainer.http.get("/v1/models/iris").json()
    assert model["default_version"] == "1"  # never promoted on its own
    listed = {v["version"]: v for v in model["versions"]}
    assert listed[version]["params"]["C"] == 0.5 and listed[version]["seed"] == 7
    # No trial folders left behind, and none ever listed.
    assert not list((trainer.models / "iris").glob(".*"))
    # The same seed and data give the same artifact.
    again, _ = trainer.wait(trainer.train("iris", dataset="iris", seed=7, params={"C": 0.5}))
    assert again["version"] != version
    assert trainer.meta("iris", again["version"])["sha256"] == meta["sha256"]


def test_a_csv_dataset_from_the_data_folder(trainer: TrainStack) -> None:
    from sklearn.datasets import load_iris

    bunch = load_iris()
    lines = ["a,b,c,d,label"] + [
        ",".join(map(str, row)) + f",{bunch.target_names[t]}" for row, t in zip(bunch.data, bunch.target, strict=True)]
    (trainer.data / "flowers.csv").write_text("\n".join(lines) + "\n")
    view, _ = trainer.wait(trainer.train("iris", dataset="flowers"))
    assert view["status"] == "SUCCESS", view
    assert trainer.meta("iris", view["version"])["dataset"]["name"] == "flowers"
    # The wrong width fails the job, naming why.
    (trainer.data / "narrow.csv").write_text("a,label\n1,x\n2,y\n3,x\n4,y\n5,x\n6,y\n7,x\n8,y\n")
    view, _ = trainer.wait(trainer.train("iris", dataset="narrow"))
    assert view["status"] == "FAILURE" and "1 feature columns; model 'iris' takes 4" in view["error"]


def test_a_search_keeps_the_best_of_the_trials_that_did_not_fail(trainer: TrainStack) -> None:
    # l1_ratio 0.5 needs the saga solver: that trial fails when it fits.
    job = trainer.train("iris", dataset="iris", search={"C": [0.01, 1.0], "l1_ratio": [0.0, 0.5]})
    view, seen = trainer.wait(job, timeout=180)
    assert seen == sorted(seen), seen
    assert view["status"] == "SUCCESS", view
    trials = view["trials"]
    assert len(trials) == 4
    failed = [t for t in trials if t["status"] == "failed"]
    assert len(failed) == 2 and all("l1_ratio" in t["params"] and t["params"]["l1_ratio"] == 0.5 for t in failed)
    assert all("Solver lbfgs supports only" in t["error"] for t in failed)
    best = max((t for t in trials if t["status"] == "SUCCESS"), key=lambda t: t["score"])
    meta = trainer.meta("iris", view["version"])
    assert meta["params"] == best["params"] and len(meta["trials"]) == 4
    # All trials failing fails the job, naming each one.
    view, _ = trainer.wait(trainer.train("iris", dataset="iris", search={"l1_ratio": [0.5, 0.7]}))
    assert view["status"] == "FAILURE" and view["error"].startswith("all 2 trial(s) failed")
    assert "trial 0 (C=1.0, l1_ratio=0.5" in view["error"]


def test_cancel_stops_a_torch_job_within_an_epoch_and_registers_nothing(trainer: TrainStack) -> None:
    before = {v["version"] for v in trainer.http.get("/v1/models/digits-cnn").json()["versions"]}
    job = trainer.train("digits-cnn", dataset="digits", params={"epochs": 200})
    wait_for(lambda: trainer.status(job)["progress"].get("epoch", 0) >= 2, 120, "two epochs")
    # Inference is answered while the job trains (its own lane, its own process).
    r = trainer.http.post("/v1/models/iris/predict", json={"inputs": [ROW], "wait": 10})
    assert r.status_code == 200
    r = trainer.http.delete(f"/v1/training/{job}")
    assert r.status_code == 202 and r.json() == {"job_id": job, "status": "REVOKED"}
    epoch = trainer.status(job)["progress"]["epoch"]
    view, _ = trainer.wait(job)
    assert view["status"] == "REVOKED"
    time.sleep(3)  # the trial notices at the end of its epoch and stops
    assert trainer.status(job)["progress"].get("epoch", 0) <= epoch + 2
    after = {v["version"] for v in trainer.http.get("/v1/models/digits-cnn").json()["versions"]}
    assert after == before
    assert not list((trainer.models / "digits-cnn").glob(".*"))
    assert trainer.http.delete(f"/v1/training/{job}").status_code == 409


def _train_child(trainer: TrainStack) -> int | None:
    workers = {w["name"]: w for w in trainer.http.get("/v1/workers").json()["workers"]}
    children = workers["train-cpu@test"]["children"]
    return int(children[0]["pid"]) if children else None


def test_a_torch_job_reports_epochs_and_loss(trainer: TrainStack) -> None:
    before = wait_for(lambda: _train_child(trainer), 30, "a training child")
    job = trainer.train("digits-cnn", dataset="digits", params={"epochs": 3}, seed=1)
    view, seen = trainer.wait(job, timeout=180)
    # The job's process was replaced after it: what it held went back.
    wait_for(lambda: _train_child(trainer) not in (None, before), 30, "a fresh training child")
    assert view["status"] == "SUCCESS", view
    assert seen == sorted(seen)
    meta = trainer.meta("digits-cnn", view["version"])
    assert meta["params"]["epochs"] == 3 and meta["metrics"]["test_accuracy"] > 0.5


def test_the_train_command_shows_progress_and_names_the_new_version(trainer: TrainStack) -> None:
    import subprocess
    import sys

    env = {**trainer.cluster.env, "TURNOUT_URL": str(trainer.http.base_url)}
    out = subprocess.run(
        [sys.executable, "-m", "turnout", "train", "iris", "--dataset", "iris", "--search",
         "C=0.1,1", "--seed", "3"], env=env, cwd=REPO, capture_output=True, text=True,
        timeout=180, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 trial(s) on train.cpu" in out.stdout
    assert "trial 0 {'C': 0.1" in out.stdout and "registered (test_accuracy" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "turnout", "train", "iris", "--dataset", "nope"], env=env,
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and "no dataset 'nope'" in bad.stderr


def test_a_trial_killed_between_its_result_and_the_join_still_registers_once(
    trainer: TrainStack,
) -> None:
    """The chord hang (celery#2911) is gone: a trial whose worker dies after
    the trial has its result and before it joins runs again, and the job
    reaches its select step once, registering one version."""
    before = {v["version"] for v in trainer.http.get("/v1/models/iris").json()["versions"]}
    arm = trainer.faults / "arm-hop"
    arm.write_text("trial")
    try:
        job = trainer.train("iris", dataset="iris", search={"C": [0.5, 2.0]})
        flag = wait_for(lambda: sorted(trainer.faults.glob("hop-*")), 60, "a trial at its join")[0]
    finally:
        arm.unlink()
    victim = next(p for p in trainer.cluster.procs if p.name == "train-cpu@test")
    dead = trainer.cluster.heartbeat("train-cpu@test")
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    trainer.cluster.procs.remove(victim)
    flag.unlink()
    trainer.cluster.worker("train", "train-cpu@test", "--device", "cpu")
    wait_for(lambda: (b := trainer.cluster.heartbeat("train-cpu@test")) is not None
             and dead is not None and b.incarnation != dead.incarnation, 60, "a new training worker")
    view, _ = trainer.wait(job, timeout=180)
    assert view["status"] == "SUCCESS", view
    after = {v["version"] for v in trainer.http.get("/v1/models/iris").json()["versions"]}
    assert len(after - before) == 1 and view["version"] in after - before
    ledger = [json.loads(e) for e in trainer.cluster.client.lrange("turnout:ledger", 0, -1)]
    joins = [e["step"] for e in ledger if e.get("flow") == job and e["event"] == "hop"
             and e["stored"] == 1]
    assert sorted(joins) == [0, 1], ledger
