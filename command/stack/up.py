"""``turnout up``: the whole stack on one machine, as child processes.

Redis (embedded unless ``TURNOUT_BROKER_URL`` names one), a CPU worker, one GPU
worker per NVML device (or one on the CPU), and the API. It waits until every
part is ready, restarts a part that dies, and on Ctrl-C or SIGTERM stops all of
them, process groups included, so that nothing is left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import IO, Any

import redis

from turnout.core import broker
from turnout.core.access import check_bind_against
from turnout.core.broker import connect as connect_broker
from turnout.core.delivery import ReaperThread
from turnout.core.errors import ConfigError
from turnout.core.routes import shared
from turnout.core.settings import RedisSettings, Settings
from turnout.stack.redis_server import EmbeddedRedis
from turnout.stack.supervisor import Part

READY_TIMEOUT_S = 300.0
STOP_GRACE_S = 20.0
MAX_RESTARTS_PER_MINUTE = 5


class Stack:
    def __init__(self, settings: Settings, port: int, flower: bool = False) -> None:
        self.settings = settings
        self.port = port
        self._wrote_api_file = False
        self.flower = flower
        self.parts: list[Part] = []
        self.redis: EmbeddedRedis | None = None
        self.redis_log: IO[bytes] | None = None
        self._stopping = False
        self._reload_asked = False
        self._lock: IO[str] | None = None
        self.reaper: ReaperThread | None = None

    def say(self, message: str) -> None:
        print(f"turnout: {message}", flush=True)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_hup)
        try:
            return self._run()
        except ConfigError as exc:
            self.say(f"error: {exc}")
            return 2
        except _Stop:
            return 0
        finally:
            self.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self._stopping:
            self._stopping = True
            raise _Stop()

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        # Only a flag here: the supervise loop does the reading and the Redis
        # round trip, outside the signal handler.
        self._reload_asked = True

    def _reload(self) -> None:
        """SIGHUP: re-read the route table and put it in force everywhere; a
        bad file is refused and the last good table stays."""
        self._reload_asked = False
        client = broker.connect(self.settings.redis(), socket_timeout=5)
        try:
            generation, table = shared.publish(client, self.settings.routes_file,
                                              self.settings.models_dir)
        except ConfigError as exc:
            self.say(f"route table not reloaded, the last good one stays: {exc}")
        except redis.RedisError as exc:
            self.say(f"route table not reloaded: Redis is unreachable ({exc})")
        else:
            composed = f", {len(table.flows)} composed" if table.flows else ""
            self.say(f"route table reloaded (generation {generation}, {len(table.routes)} "
                     f"models{composed})")
        finally:
            client.close()

    def _run(self) -> int:
        settings = self.settings
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        self._lock_home()
        self.say(f"state in {settings.home}")
        self._build_models()
        broker = self._start_redis()
        # One more reaper beside the API's and the workers': a dead worker's
        # jobs come back even while the API is down.
        self.reaper = ReaperThread(broker, self.settings.dead_after_s,
                                   self.settings.reap_interval_s, "up")
        self.reaper.start()
        # The file is the table in force from now on, even where Redis kept
        # one published by an earlier `turnout reload`.
        client = connect_broker(broker, socket_timeout=5)
        try:
            shared.publish(client, settings.routes_file, settings.models_dir)
        finally:
            client.close()
        # Safe by default: a public API needs keys (or --insecure-no-auth).
        check_bind_against(settings.model_copy(update={"broker_url": broker.url}))
        env = self._child_env(broker)
        self._plan_parts(env)
        for part in self.parts:
            part.start()
        self._wait_ready()
        self._write_api_file()
        self.say(f"ready: http://{settings.api_host}:{self.port}  (Ctrl-C stops everything)")
        if self.flower:
            self.say(f"Flower: http://127.0.0.1:{settings.flower_port} (user turnout, password "
                     f"in {settings.home / 'flower.password'})")
        self.say(f"logs in {settings.logs_dir}")
        self._supervise()
        return 0

    def _lock_home(self) -> None:
        """One `turnout up` per TURNOUT_HOME: two would share Redis's data folder."""
        self._lock = (self.settings.home / "up.lock").open("a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            owner = self._lock.read().strip() or "?"
            raise ConfigError(
                f"another `turnout up` (pid {owner}) is running from {self.settings.home}; "
                "stop it, or set TURNOUT_HOME to another folder"
            ) from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    def _build_models(self) -> None:
        env = {**os.environ, "TURNOUT_MODELS_DIR": str(self.settings.models_dir)}
        cmd = [sys.executable, "-m", "turnout", "models", "build", "--missing"]
        if subprocess.run(cmd, env=env, check=False).returncode != 0:
            raise ConfigError("building the models failed (see above)")

    def _start_redis(self) -> RedisSettings:
        if self.settings.broker_url:
            broker = RedisSettings.from_url(self.settings.broker_url)
            self.say(f"using the Redis at {broker.redacted}")
            return broker
        self.redis = EmbeddedRedis(
            self.settings.home / "redis", self.settings.redis_port, self.settings.redis_server
        )
        self.redis_log = (self.settings.logs_dir / "redis.log").open("ab")
        broker = self.redis.start(log=self.redis_log)
        self._write_broker_file(broker)
        self.say(f"embedded Redis on 127.0.0.1:{broker.port} (data in {self.redis.folder})")
        return broker

    def _write_broker_file(self, broker: RedisSettings) -> None:
        # Lets `turnout worker …` and `turnout api` on this machine find the
        # embedded Redis without the password being typed anywhere.
        path = self.settings.broker_file
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(broker.url + "\n")

    def _write_api_file(self) -> None:
        # Lets `turnout status`, `models promote` and `train` on this machine
        # find this API, whatever port it was given.
        url = self.settings.model_copy(update={"api_port": self.port}).own_api_url
        self.settings.api_file.write_text(url + "\n")
        self._wrote_api_file = True

    def _child_env(self, broker: RedisSettings) -> dict[str, str]:
        return {
            **os.environ,
            "TURNOUT_BROKER_URL": broker.url,
            "TURNOUT_HOME": str(self.settings.home),
            "TURNOUT_MODELS_DIR": str(self.settings.models_dir),
            "TURNOUT_ROUTES_FILE": str(self.settings.routes_file),
            "TURNOUT_DATA_DIR": str(self.settings.data_dir),
            "TURNOUT_LOG_LEVEL": self.settings.log_level,
            "TURNOUT_EVENTS": "1" if self.settings.events else "0",
            "TURNOUT_INSECURE_NO_AUTH": "1" if self.settings.insecure_no_auth else "0",
            "TURNOUT_FLOWER_PORT": str(self.settings.flower_port),
            "PYTHONUNBUFFERED": "1",
        }

    def _plan_parts(self, env: dict[str, str]) -> None:
        from turnout.workers.gpu.nvml import device_count

        logs = self.settings.logs_dir
        me = [sys.executable, "-m", "turnout"]
        self.parts.append(Part("worker cpu", me + ["worker", "cpu"], logs / "worker-cpu.log", env))
        count, why = device_count()
        if count:
            self.say(f"NVML reports {count} GPU(s): one GPU worker each")
            for i in range(count):
                self.parts.append(
                    Part(f"worker gpu{i}", me + ["worker", "gpu", "--device", str(i)],
                         logs / f"worker-gpu{i}.log", env)
                )
        else:
            self.say(f"no GPU found ({why}); starting one GPU worker on the CPU")
            self.parts.append(
                Part("worker gpu-cpu", me + ["worker", "gpu", "--device", "cpu"],
                     logs / "worker-gpu-cpu.log", env)
            )
        # The training lanes, idle until a job comes: GPU jobs on GPU 0 when
        # there is one; otherwise one CPU training worker takes both lanes.
        train = ["worker", "train", "--device", "cpu"]
        if count:
            self.parts.append(Part("worker train-0", me + ["worker", "train", "--device", "0"],
                                   logs / "worker-train-0.log", env))
            train += ["--queues", "train.cpu"]
        self.parts.append(Part("worker train-cpu", me + train, logs / "worker-train-cpu.log", env))
        self.parts.append(
            Part("api", me + ["api", "--host", self.settings.api_host, "--port", str(self.port)],
                 logs / "api.log", env)
        )
        if self.flower:
            self.parts.append(Part("flower", me + ["flower"], logs / "flower.log", env))

    @property
    def expected_workers(self) -> int:
        return sum(1 for part in self.parts if part.name.startswith("worker "))

    def _get(self, path: str) -> Any:
        url = f"http://{self.settings.api_host}:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            for part in self.parts:
                if not part.running():
                    raise ConfigError(
                        f"{part.name} exited with code {part.proc and part.proc.returncode} "
                        f"while starting; the end of {part.log_path}:\n{part.tail()}"
                    )
            try:
                self._get("/readyz")
                live = self._get("/v1/workers")["workers"]
                if len(live) >= self.expected_workers:
                    return
                waiting = f"{len(live)} of {self.expected_workers} workers ready"
            except (urllib.error.URLError, OSError, ValueError, KeyError):
                waiting = "waiting for the API"
            if waiting != last:
                self.say(waiting)
                last = waiting
            time.sleep(0.25)
        raise ConfigError(f"the stack was not ready in {READY_TIMEOUT_S:.0f} s ({last})")

    def _supervise(self) -> None:
        while True:
            time.sleep(0.5)
            if self._reload_asked:
                self._reload()
            if self.redis is not None and self.redis.proc is not None and self.redis.proc.poll() is not None:
                self.say("redis-server exited; restarting it (its append-only file keeps the data)")
                self.redis.start(log=self.redis_log)
            for part in self.parts:
                if part.running():
                    continue
                now = time.monotonic()
                while part.restarts and now - part.restarts[0] > 60:
                    part.restarts.popleft()
                code = part.proc.returncode if part.proc else None
                if len(part.restarts) >= MAX_RESTARTS_PER_MINUTE:
                    raise ConfigError(
                        f"{part.name} keeps exiting (code {code}); stopping. End of "
                        f"{part.log_path}:\n{part.tail()}"
                    )
                self.say(f"{part.name} exited with code {code}; restarting it")
                part.restarts.append(now)
                if part.log_file is not None:
                    part.log_file.close()
                part.start()

    def shutdown(self) -> None:
        self._stopping = True
        if self.parts or self.redis:
            self.say("stopping")
        # The API first, so nothing new comes in; then workers; Redis last.
        for part in reversed(self.parts):
            part.stop(STOP_GRACE_S)
        self.parts = []
        if self._wrote_api_file:  # never another stack's, found locked at start
            self.settings.api_file.unlink(missing_ok=True)
            self._wrote_api_file = False
        if self.reaper is not None:
            self.reaper.stop()
            self.reaper = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
            try:
                self.settings.broker_file.unlink()
            except FileNotFoundError:
                pass
        if self.redis_log is not None:
            self.redis_log.close()
            self.redis_log = None


class _Stop(BaseException):
    """Raised by the signal handler to unwind from wherever `up` is waiting."""
