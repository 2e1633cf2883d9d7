"""The README's and docs' shell examples, run as written against a running
stack: the first request, the canary's metrics, promotion and rollback, and
`turnout status`. Each must print what the page says it prints."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_redis
from tests.support.models import add_version
from tests.support.procs import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

ROUTES = REPO / "tests" / "support" / "routes-lifecycle.yaml"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The examples that run against a stack; the others (training, a client loop) have tests of their own.
RUNNABLE = ("curl -s localhost:8000/metrics", ".venv/bin/turnout models promote",
            ".venv/bin/turnout status")


@dataclass
class Example:
    page: str
    command: str
    shown: list[str]


def console_examples(page: Path) -> list[Example]:
    """Every ``$ command`` of the page's console blocks, with the lines shown after it."""
    out: list[Example] = []
    for lang, body in BLOCK.findall(page.read_text()):
        if lang != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                out.append(Example(page.name, line[2:], []))
            elif out:
                out[-1].shown.append(line)
    return [e for e in out if e.command.startswith(RUNNABLE)]


@dataclass
class Docs:
    url: str
    home: Path
    http: httpx.Client

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        """``command`` as a reader types it, pointed at this stack the way
        `./dev up` points it: by the API URL recorded in TURNOUT_HOME."""
        port = httpx.URL(self.url).port
        command = command.replace("localhost:8000", f"127.0.0.1:{port}")
        command = command.replace(".venv/bin/turnout", f"{sys.executable} -m turnout")
        env = {"PATH": "/usr/bin:/bin", "TURNOUT_HOME": str(self.home), "COLUMNS": "120"}
        return subprocess.run(["bash", "-c", command], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)

    def traffic(self, n: int = 60) -> None:
        for _ in range(n):
            r = self.http.post("/v1/models/iris/predict",
                               json={"inputs": [[5.1, 3.5, 1.4, 0.2]], "wait": 10})
            assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def docs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    tmp = tmp_path_factory.mktemp("docs")
    models = tmp / "models"
    shutil.copytree(models_dir / "iris" / "1", models / "iris" / "1")
    add_version(models, "iris", "2", "iris/1")
    routes = tmp / "routes.yaml"
    routes.write_text(ROUTES.read_text().split("  # Its versions other than 1")[0])
    server = start_redis(tmp / "redis")
    assert server.settings is not None
    cluster = Cluster(server.settings, models, routes, tmp, extra_env={
        "TURNOUT_RETIRE_AFTER_S": "1", "TURNOUT_LIFECYCLE_POLL_S": "0.2"})
    try:
        cluster.worker("cpu", "cpu@docs", "--concurrency", "2")
        _, url = cluster.api()
        home = tmp / "home"
        home.mkdir()
        (home / "api.url").write_text(url + "\n")  # as `turnout up` records it
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_for(lambda: http.get("/v1/workers").json()["workers"], 30, "the worker")
            yield Docs(url, home, http)
    finally:
        cluster.stop()
        server.stop()


def test_the_readmes_first_request(docs: Docs) -> None:
    blocks = BLOCK.findall((REPO / "README.md").read_text())
    index = next(i for i, (lang, body) in enumerate(blocks)
                 if lang == "sh" and body.startswith("curl"))
    command, (lang, shown) = blocks[index][1], blocks[index + 1]
    assert lang == "json"
    done = docs.run(command)
    assert done.returncode == 0, done.stderr
    body, documented = json.loads(done.stdout), json.loads(shown)
    assert body["status"] == documented["status"] == "SUCCESS"
    assert body["predictions"] == documented["predictions"]
    assert set(documented) <= set(body), set(documented) - set(body)


def test_the_lifecycle_pages_canary_metrics_promotion_and_rollback(docs: Docs) -> None:
    examples = console_examples(REPO / "docs" / "lifecycle.md")
    assert [e.command.split()[0] for e in examples].count(".venv/bin/turnout") >= 3
    assert any("grep" in e.command for e in examples)
    for example in examples:
        docs.traffic()
        done = docs.run(example.command)
        assert done.returncode == 0, (example.command, done.stdout, done.stderr)
        printed = done.stdout.splitlines()
        for line in example.shown:
            if line.startswith("turnout:"):
                assert line in printed, (example.command, line, printed)
            elif line.startswith("turnout_"):
                # A series as the page shows it: its name and labels, as printed.
                series = line.rsplit(" ", 1)[0]
                assert any(p.startswith(series + " ") for p in printed), (line, printed)


def test_the_monitoring_pages_status_screen(docs: Docs) -> None:
    examples = console_examples(REPO / "docs" / "monitoring.md")
    assert examples, "docs/monitoring.md shows no `turnout status`"
    for example in examples:
        done = docs.run(example.command)
        assert done.returncode == 0, done.stderr
        shown = [line.split()[0] for line in example.shown if line.strip()]
        for title in ("workers", "queues", "GPUs", "models"):
            assert title in shown and title in done.stdout.split(), title
        assert "cpu@docs" in done.stdout
