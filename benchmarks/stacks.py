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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.redis_server import EmbeddedRedis, free_port
from router.settings import RedisSettings


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
