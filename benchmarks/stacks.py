"""Starting and stopping what the benchmark measures, as real processes on
loopback ports, each in its own process group, logs in the run's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import EmbeddedRedis, free_port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Procs:
    folder: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.folder / f"{name}.log"
        with log.open("ab") as fh:
            popen = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env, **(env or {})}, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, names: list[str] | None = None) -> None:
        for proc in reversed(list(self.procs)):
            if names is None or proc.name in names:
                proc.stop()
                self.procs.remove(proc)


def wait_http(url: str, proc: Proc, timeout: float = 180, path: str = "/") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited; see {proc.log}:\n{proc.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + path, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError as exc:
            if getattr(exc, "code", 0) and exc.code < 500:  # type: ignore[attr-defined]
                return
        time.sleep(0.2)
    raise TimeoutError(f"{proc.name} did not answer at {url} in {timeout:g} s; see {proc.log}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_workers(url: str, count: int, timeout: float = 180) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = get_json(url + "/v1/workers")["workers"]
        if len(workers) >= count:
            return list(workers)
        time.sleep(0.3)
    raise TimeoutError(f"fewer than {count} workers came up at {url}")


def start_redis(folder: Path) -> tuple[EmbeddedRedis, RedisSettings]:
    server = EmbeddedRedis(folder / "redis")
    server.start(log=(folder / "redis.log").open("ab"))
    assert server.settings is not None
    return server, server.settings


def python() -> list[str]:
    return [sys.executable]


__all__ = ["Proc", "Procs", "free_port", "get_json", "python", "start_redis", "wait_http", "wait_workers"]


# -- the stacks of one run --------------------------------------------------------


def routes_variant(source: Path, target: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(source.read_text())
    for route in data["models"].values():
        if "steps" not in route and "ensemble" not in route:  # a pipeline has no queue of its own
            change(route)
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    return target


def no_batching(route: dict[str, Any]) -> None:
    route.pop("max_batch", None)
    route.pop("max_delay_ms", None)


def one_queue(route: dict[str, Any]) -> None:
    route["queue"] = "cpu"
    route.pop("fallback", None)
    route.pop("devices", None)


class BenchStack:
    """The processes of one run, on one embedded Redis."""

    def __init__(self, folder: Path) -> None:
        from turnout.core.settings import load_settings

        self.folder = folder
        self.settings = load_settings()
        self.redis, self.broker = start_redis(folder)
        self.procs = Procs(folder, {
            **os.environ,
            "TURNOUT_BROKER_URL": self.broker.url,
            "TURNOUT_HOME": str(folder / "home"),
            "TURNOUT_MODELS_DIR": str(self.settings.models_dir),
            "PYTHONUNBUFFERED": "1",
            "BENCH_BROKER_URL": self.broker.url,
            "BENCH_MODELS_DIR": str(self.settings.models_dir),
        })

    def turnout_cmd(self, *args: str) -> list[str]:
        return [*python(), "-m", "turnout", *args]

    def build_models(self) -> None:
        import subprocess

        subprocess.run(self.turnout_cmd("models", "build", "--missing"), check=True,
                       env=self.procs.env)

    def api(self, name: str, routes: Path, env: dict[str, str] | None = None) -> str:
        port = free_port()
        proc = self.procs.spawn(name, self.turnout_cmd("api", "--port", str(port)),
                                env={"TURNOUT_ROUTES_FILE": str(routes), **(env or {})})
        url = f"http://127.0.0.1:{port}"
        wait_http(url, proc, path="/readyz")
        return url

    def turnout(
        self, routes: Path, shared: bool = False, training: bool = False,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[str, list[str]]:
        """Turnout's workers (a CPU worker and one GPU worker per device, or one
        on the CPU) and an API; with ``shared``, every worker on the cpu queue;
        with ``training``, a training worker too; ``extra_env`` for them all."""
        from turnout.workers.gpu.nvml import device_count

        env = {"TURNOUT_ROUTES_FILE": str(routes), **(extra_env or {})}
        tag = "shared" if shared else "bench"
        names = [f"cpu@{tag}"]
        self.procs.spawn(names[0], self.turnout_cmd("worker", "cpu", "--name", names[0]), env=env)
        gpus, _ = device_count()
        devices = [str(i) for i in range(gpus)] or ["cpu"]
        for device in devices:
            name = f"gpu{device}@{tag}" if device != "cpu" else f"gpu-cpu@{tag}"
            argv = ["worker", "gpu", "--device", device, "--name", name]
            if shared:
                argv += ["--queues", "cpu"]
            self.procs.spawn(name, self.turnout_cmd(*argv), env=env)
            names.append(name)
        if training:
            name = f"train@{tag}"
            device = "0" if gpus else "cpu"
            self.procs.spawn(name, self.turnout_cmd("worker", "train", "--device", device,
                                                    "--name", name), env=env)
            names.append(name)
        url = self.api(f"api-{tag}", routes, extra_env)
        wait_workers(url, len(names))
        return url, names

    def baselines(self, kinds: tuple[str, ...] = ("floor", "tutorial", "handwritten")) -> dict[str, str]:
        urls = {}
        for kind in kinds:
            port = free_port()
            env = {"BENCH_PORT": str(port)}
            proc = self.procs.spawn(f"{kind}-api", [*python(), "-m", "turnout.benchmarks.baselines", kind, "api"], env=env)
            urls[kind] = f"http://127.0.0.1:{port}"
            if kind == "tutorial":
                self.procs.spawn("tutorial-worker", [
                    *python(), "-m", "celery", "-A", "turnout.benchmarks.baselines", "worker",
                    "-c", "2", "-Q", "tutorial", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "-l", "WARNING",
                ], env={"BENCH_TUTORIAL": "1"})
            if kind == "handwritten":
                for i in range(2):
                    self.procs.spawn(f"handwritten-worker-{i}",
                                     [*python(), "-m", "turnout.benchmarks.baselines", kind, "worker"])
            wait_http(urls[kind], proc, path="/docs")
        return urls

    def close(self) -> None:
        self.procs.stop()
        self.redis.stop()
