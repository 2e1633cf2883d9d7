"""Flower, the Celery monitor, run against the stack's own broker.

Nothing secret goes on a command line: Flower finds the broker through
``turnout.core.celery_app`` (built from the settings) and its basic-auth password
in its environment (``FLOWER_BASIC_AUTH``); the password is generated once
and kept in ``$TURNOUT_HOME/flower.password`` (mode 0600).

While Flower runs, ``turnout:monitoring`` is kept set in Redis, and every API
process then sends Celery's task-sent event with each task (Flower itself
turns task events on in the workers).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import redis

from turnout.core import redis_keys
from turnout.core.broker import connect
from turnout.core.settings import RedisSettings, Settings

FLOWER_USER = "turnout"
BEACON_S = 5.0


def flower_password(home: Path) -> str:
    """The generated password, made on first use (0600, in TURNOUT_HOME)."""
    path = home / "flower.password"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


def flower_command(settings: Settings, address: str) -> tuple[list[str], dict[str, str]]:
    """Flower's argv and environment: the broker and the password live in the
    environment only."""
    argv = [sys.executable, "-m", "celery", "-A", "turnout.core.celery_app", "flower",
            f"--address={address}", f"--port={settings.flower_port}"]
    env = {
        **os.environ,
        "TURNOUT_HOME": str(settings.home),
        "TURNOUT_ROUTES_FILE": str(settings.routes_file),
        "TURNOUT_BROKER_URL": settings.redis().url,
        "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{flower_password(settings.home)}",
    }
    return argv, env


class Beacon:
    """Keeps ``turnout:monitoring`` set while Flower runs (it lapses on its
    own a few seconds after, however Flower ended)."""

    def __init__(self, where: RedisSettings) -> None:
        self._client = connect(where, socket_timeout=5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="turnout-monitoring",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._client.set(redis_keys.MONITORING, "flower", ex=int(BEACON_S * 3))
            except redis.RedisError:
                pass  # tried again next time; the key lapses meanwhile
            self._stop.wait(BEACON_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self._client.delete(redis_keys.MONITORING)
        except redis.RedisError:
            pass
        self._client.close()


def run_flower(settings: Settings, address: str) -> int:
    """Run Flower in the foreground until it exits or this process is told to stop."""
    argv, env = flower_command(settings, address)
    beacon = Beacon(settings.redis())
    proc = subprocess.Popen(argv, env=env)

    def forward(signum: int, _frame: Any) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    beacon.start()
    try:
        return proc.wait()
    finally:
        beacon.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
