"""The chaos suite's stack: its own Redis (AOF on, a fixed port so that a
restart comes back where clients look), a CPU worker, two GPU workers on the
CPU, and the API, each a real process under a supervisor that restarts what
dies, as ``turnout up`` does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO, Any

import redis

from turnout.core import delivery, redis_keys
from turnout.core.messages import Heartbeat
from turnout.core.settings import RedisSettings, load_settings
from turnout.stack.redis_server import EmbeddedRedis, free_port
from turnout.stack.supervisor import Part

ROUTES = Path(__file__).with_name("routes.yaml")
GPU_WORKERS = ("gpu-a@chaos", "gpu-b@chaos")
CPU_WORKER = "cpu@chaos"
WORKERS = (CPU_WORKER, *GPU_WORKERS)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc: Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class ChaosStack:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.settings = load_settings()
        self.redis = EmbeddedRedis(folder / "redis", free_port())
        self.redis_log: IO[bytes] = (folder / "redis.log").open("ab")
        self.broker: RedisSettings = self.redis.start(log=self.redis_log)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = self.parts_env(env)
        me = [sys.executable, "-m", "turnout"]
        self.parts: dict[str, Part] = {}
        self.parts[CPU_WORKER] = self._part(CPU_WORKER, me + ["worker", "cpu", "--name", CPU_WORKER,
                                                             "--concurrency", "2"])
        for name in GPU_WORKERS:
            self.parts[name] = self._part(name, me + ["worker", "gpu", "--device", "cpu", "--name", name])
        self.parts["api"] = self._part("api", me + ["api", "--port", str(self.port)])
        self.client = redis.Redis.from_url(self.broker.url, socket_timeout=5)
        self.restarts: list[tuple[float, str]] = []
        self.faults: list[tuple[float, str]] = []
        self.held: set[str] = set()  # parts the supervisor must leave down
        self.redis_down = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def parts_env(self, env: dict[str, str]) -> dict[str, str]:
        """What every part runs with: the broker, the chaos route table, the
        ledger on, ``env`` over it."""
        return {
            **os.environ,
            "TURNOUT_BROKER_URL": self.broker.url,
            "TURNOUT_HOME": str(self.folder / "home"),
            "TURNOUT_MODELS_DIR": str(self.settings.models_dir),
            "TURNOUT_ROUTES_FILE": str(ROUTES),
            "TURNOUT_LEDGER": "1",
            # Where scenario 14 arms a pipeline step's fault points.
            "TURNOUT_FAULT_DIR": str(self.folder / "faults"),
            "PYTHONUNBUFFERED": "1",
            **env,
        }

    def _part(self, name: str, argv: list[str]) -> Part:
        return Part(name, argv, self.folder / f"{name.replace('@', '_')}.log", self.env)

    def start(self) -> None:
        subprocess.run([sys.executable, "-m", "turnout", "models", "build", "--missing"],
                       env={**self.env, "TURNOUT_ROUTES_FILE": str(self.settings.routes_file)},
                       check=True)
        for part in self.parts.values():
            part.start()
        self._thread.start()
        self.wait_healthy(timeout_s=240)

    def _supervise(self) -> None:
        while not self._stop.wait(0.2):
            if not self.redis_down and self.redis.proc is not None and self.redis.proc.poll() is not None:
                self.restarts.append((time.time(), "redis"))
                self.redis.start(log=self.redis_log)
            for name, part in self.parts.items():
                if name not in self.held and not part.running():
                    self.restarts.append((time.time(), name))
                    if part.log_file is not None:
                        part.log_file.close()
                    part.start()

    # -- looking at it -------------------------------------------------------------

    def get(self, path: str, timeout: float = 2) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def live_workers(self) -> set[str]:
        try:
            return {w["name"] for w in self.get("/v1/workers")["workers"]}
        except OSError:
            return set()

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.live_workers() >= set(WORKERS):
                return
            failing = Counter(name for _, name in self.restarts)
            for name, count in failing.items():
                if count >= 5 and name in self.parts:
                    raise RuntimeError(f"{name} keeps exiting; the end of its log:\n"
                                       + self.parts[name].tail())
            time.sleep(0.2)
        raise RuntimeError(f"the chaos stack was not healthy in {timeout_s:.0f} s; logs in {self.folder}")

    def heartbeat(self, name: str) -> Heartbeat | None:
        raw = self.client.get(redis_keys.worker(name))
        return Heartbeat.decode(raw) if raw else None

    def incarnation(self, name: str) -> str | None:
        """The incarnation the worker's live heartbeat names, if it has one."""
        beat = self.heartbeat(name)
        return beat.incarnation if beat is not None else None

    def busy_gpu_worker(self, timeout_s: float = 30) -> str:
        """A GPU worker that holds a job now (Redis's record of what it owns,
        not the heartbeat, which is up to a beat old)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name in GPU_WORKERS:
                incarnation = self.incarnation(name)
                if (incarnation and self.parts[name].running()
                        and self.client.scard(delivery.held(incarnation))):
                    return name
            time.sleep(0.02)
        raise RuntimeError("no GPU worker became busy")

    def gpu_worker_with_riders(self, timeout_s: float = 30) -> tuple[str, str, int] | None:
        """A GPU worker whose running pass holds tasks taken along (worker-side
        batching): (name, incarnation, how many); None if none did in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name in GPU_WORKERS:
                incarnation = self.incarnation(name)
                if incarnation and self.parts[name].running():
                    riding = int(self.client.hlen(redis_keys.joined(incarnation)))
                    if riding:
                        return name, incarnation, riding
            time.sleep(0.02)
        return None

    @property
    def fault_dir(self) -> Path:
        return Path(self.env["TURNOUT_FAULT_DIR"])

    def worker_of(self, pid: int) -> str | None:
        """The GPU worker whose pool child ``pid`` is."""
        for name in GPU_WORKERS:
            if self.parts[name].running() and pid in _children(self.pid(name)):
                return name
        return None

    def kill_pool_child(self, name: str) -> float:
        """SIGKILL the pool child of a one-child worker (its parent lives on)."""
        children = _children(self.pid(name))
        at = time.time()
        for child in children:
            os.kill(child, signal.SIGKILL)
        self.faults.append((at, f"SIGKILL {name}'s pool child"))
        return at

    def pid(self, name: str) -> int:
        proc = self.parts[name].proc
        assert proc is not None
        return proc.pid

    # -- faults -----------------------------------------------------------------------

    def kill(self, name: str, sig: int = signal.SIGKILL, group: bool = True) -> float:
        """Signal a whole part (its process group: parent and pool children),
        or with ``group=False`` its leader alone (a warm shutdown's SIGTERM)."""
        at = time.time()
        if group:
            self.parts[name].signal_group(sig)
        else:
            os.kill(self.pid(name), sig)
        if sig != signal.SIGCONT:
            self.faults.append((at, f"{signal.Signals(sig).name} {name}"))
        return at

    def kill_redis(self) -> float:
        assert self.redis.proc is not None
        at = time.time()
        self.redis.proc.kill()
        self.faults.append((at, "SIGKILL redis"))
        return at

    def stop_redis(self) -> float:
        self.redis_down = True
        at = time.time()
        self.redis.stop()
        self.faults.append((at, "stop redis"))
        return at

    def start_redis(self) -> float:
        self.redis.start(log=self.redis_log)
        self.redis_down = False
        return time.time()

    def reset_counts(self) -> None:
        """A clean slate for the next scenario's counts."""
        self.client.delete(delivery.LEDGER, delivery.STATS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for part in reversed(list(self.parts.values())):
            part.stop(10)
        self.client.close()
        self.redis.stop()
        self.redis_log.close()
