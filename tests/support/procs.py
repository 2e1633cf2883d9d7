"""Starting and stopping real Turnout processes for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from turnout.core import broker, redis_keys
from turnout.core.messages import Heartbeat
from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            value = None
        if value:
            return value
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


class Cluster:
    """Turnout processes sharing one real Redis, started by a test."""

    def __init__(self, redis_settings: RedisSettings, models_dir: Path, routes: Path, tmp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.redis_settings = redis_settings
        self.models_dir = models_dir
        self.routes = routes
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.env = {
            **os.environ,
            "TURNOUT_BROKER_URL": redis_settings.url,
            "TURNOUT_MODELS_DIR": str(models_dir),
            "TURNOUT_ROUTES_FILE": str(routes),
            "TURNOUT_HOME": str(tmp / "home"),
            "TURNOUT_HEARTBEAT_S": "0.5",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.client = broker.connect(redis_settings)

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{name.replace('@', '_')}.log"
        fh = log.open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "turnout", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        fh.close()
        p = Proc(name, proc, log)
        self.procs.append(p)
        return p

    def heartbeat(self, name: str) -> Heartbeat | None:
        raw = self.client.get(redis_keys.worker(name))
        return Heartbeat.decode(raw) if raw else None

    def worker(self, kind: str, name: str, *extra: str, env: dict[str, str] | None = None, timeout: float = 90) -> Proc:
        p = self.spawn(name, "worker", kind, "--name", name, *extra, env=env)
        wait_for(lambda: self.heartbeat(name), timeout, f"worker {name}", p.proc, p.log)
        return p

    def api(self, timeout: float = 60, env: dict[str, str] | None = None) -> tuple[Proc, str]:
        port = free_port()
        p = self.spawn(f"api-{port}", "api", "--host", "127.0.0.1", "--port", str(port), env=env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url + "/readyz", timeout=1).status_code == 200, timeout, "the API", p.proc, p.log)
        return p, url

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs.clear()
        self.client.close()


def poll_task(client: httpx.Client, task_id: str, until: set[str], timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = client.get(f"/v1/tasks/{task_id}").json()
        return body if body["status"] in until else None

    return wait_for(done, timeout, f"task {task_id} to reach {until}")
