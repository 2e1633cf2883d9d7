"""`turnout up` from the outside: it starts everything, serves, and leaves
nothing behind on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import REPO, alive, descendants
from turnout.core.routes import load_routes
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import free_port

pytestmark = pytest.mark.integration


class Up:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "turnout", "up", "--port", str(self.port), *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, text: str, timeout: float = 180) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no line with {text!r}; saw:\n" + "\n".join(self.seen)) from None
            self.seen.append(line)
            if text in line:
                return line

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(90)


def _env(tmp: Path, models_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TURNOUT_")}
    return {**env, "TURNOUT_HOME": str(tmp / "home"), "TURNOUT_MODELS_DIR": str(models_dir), **extra}


@pytest.fixture
def up_factory() -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        if up.proc.poll() is None:
            up.proc.kill()
            up.proc.wait()


def test_up_serves_iris_and_ctrl_c_stops_everything(tmp_path: Path, models_dir: Path, up_factory: list[Up]) -> None:
    flower_port = free_port()
    up = Up(_env(tmp_path, models_dir, TURNOUT_FLOWER_PORT=str(flower_port)), "--flower")
    up_factory.append(up)
    ready = up.wait_for_line("ready:")
    assert f"http://127.0.0.1:{up.port}" in ready
    assert any("starting one GPU worker on the CPU" in line for line in up.seen)
    flower = up.wait_for_line("Flower:")
    assert f"http://127.0.0.1:{flower_port}" in flower and "flower.password" in flower
    password = (tmp_path / "home" / "flower.password").read_text().strip()

    def flower_sees(worker: str) -> bool:
        r = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1",
                      auth=("turnout", password), timeout=10)
        return r.status_code == 200 and any(name.startswith(worker) for name in r.json())

    deadline = time.monotonic() + 60
    while not flower_sees("cpu@"):
        assert time.monotonic() < deadline, "Flower never listed the CPU worker"
        time.sleep(0.5)

    r = httpx.post(
        f"http://127.0.0.1:{up.port}/v1/models/iris/predict",
        json={"inputs": [[5.1, 3.5, 1.4, 0.2]], "wait": 5},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == ["setosa"]
    workers = httpx.get(f"http://127.0.0.1:{up.port}/v1/workers").json()["workers"]
    assert sorted(w["name"].split("@")[0] for w in workers) == ["cpu", "gpu-cpu", "train-cpu"]

    home = tmp_path / "home"
    conf = (home / "redis" / "redis.conf").read_text()
    assert "bind 127.0.0.1" in conf and "appendfsync everysec" in conf
    assert "maxmemory-policy noeviction" in conf and "requirepass " in conf
    assert stat.S_IMODE((home / "redis" / "password").stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "broker.url").stat().st_mode) == 0o600
    assert (home / "logs" / "worker-cpu.log").exists()
    family = descendants(up.proc.pid)
    assert len(family) >= 8  # redis, 3 workers and their pool children, the API

    # SIGHUP re-reads the route table and puts it in force.
    up.proc.send_signal(signal.SIGHUP)
    shipped = load_routes(REPO / "configs" / "routes.yaml")
    assert f"(generation 2, {len(shipped.routes)} models, {len(shipped.flows)} composed)" \
        in up.wait_for_line("route table reloaded", timeout=30)

    second = subprocess.run(
        [sys.executable, "-m", "turnout", "up", "--port", str(free_port())],
        cwd=REPO, env=_env(tmp_path, models_dir), capture_output=True, text=True, timeout=60, check=False,
    )
    assert second.returncode == 2
    assert f"another `turnout up` (pid {up.proc.pid}) is running from {home}" in second.stdout

    assert up.stop(signal.SIGINT) == 0

    assert [pid for pid in family if alive(pid)] == []
    assert (home / "redis" / "appendonly.aof").exists() or (home / "redis" / "appendonlydir").exists()
    assert not (home / "broker.url").exists()


def test_up_with_an_external_broker_starts_no_redis_and_stops_on_sigterm(
    tmp_path: Path, models_dir: Path, redis_server: RedisSettings, up_factory: list[Up]
) -> None:
    external = RedisSettings(redis_server.host, redis_server.port, db=5, password=redis_server.password)
    up = Up(_env(tmp_path, models_dir, TURNOUT_BROKER_URL=external.url))
    up_factory.append(up)
    up.wait_for_line("ready:")
    assert any("using the Redis at redis://:***@127.0.0.1" in line for line in up.seen)
    family = descendants(up.proc.pid)
    commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in family]
    assert not any(b"redis-server" in c for c in commands)

    assert up.stop(signal.SIGTERM) == 0
    assert [pid for pid in family if alive(pid)] == []


def test_up_refuses_a_public_api_without_keys(tmp_path: Path, models_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "turnout", "up", "--port", str(free_port())],
        cwd=REPO, env=_env(tmp_path, models_dir, TURNOUT_API_HOST="0.0.0.0"),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "refusing to serve the API on 0.0.0.0 with no API keys" in out.stdout
    assert not (tmp_path / "home" / "broker.url").exists()  # its Redis was stopped again


def test_up_refuses_a_bad_route_table_before_starting_anything(tmp_path: Path, models_dir: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("models:\n  iris:\n    framework: sklearn\n    version: 1\n    queue: gpux\n    input: {width: 4}\n")
    result = subprocess.run(
        [sys.executable, "-m", "turnout", "up"],
        cwd=REPO, env=_env(tmp_path, models_dir, TURNOUT_ROUTES_FILE=str(routes)),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "models.iris.queue (line 5): expected 'cpu', 'gpu' or 'gpu.<index>', got 'gpux'" in result.stderr
    assert not (tmp_path / "home" / "redis").exists()
