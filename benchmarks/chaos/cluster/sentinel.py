"""A Redis primary, its replicas and three Sentinels, started for the
Sentinel tests and the rehearsal (Debian's ``redis-server`` and
``redis-sentinel``): every server shares one password, the Sentinels
monitor the primary as ``turnout`` and fail it over two seconds after it
stops answering; a primary with no replica in sync refuses writes."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from turnout.core.settings import RedisSettings
from turnout.stack.redis_server import EmbeddedRedis

MASTER = "turnout"
DEBIAN_SENTINEL = "/usr/bin/redis-sentinel"


@dataclass
class Node:
    """Where one server and its Sentinel run: an address and a launcher."""

    host: str
    redis_port: int
    sentinel_port: int
    launcher: Sequence[str] = ()


@dataclass
class SentinelGroup:
    folder: Path
    nodes: list[Node]
    password: str
    # Long enough that a replica just promoted on a loaded machine is not
    # taken for dead at once (a second failover, and a split brain, follow).
    down_after_ms: int = 2000
    servers: list[EmbeddedRedis] = field(default_factory=list)
    sentinels: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, binary: str = "/usr/bin/redis-server") -> RedisSettings:
        primary = self.nodes[0]
        for i, node in enumerate(self.nodes):
            # No wait before a replica's first sync (Redis waits 5 s by
            # default, to serve several replicas with one transfer).
            # A primary cut off from every replica stops taking writes within
            # seconds (Redis's min-replicas): what a split brain can accept,
            # and lose, is bounded by it.
            extra = [f"masterauth {self.password}", "repl-diskless-sync-delay 0",
                     "min-replicas-to-write 1", "min-replicas-max-lag 3"]
            if i:
                extra.append(f"replicaof {primary.host} {primary.redis_port}")
            server = EmbeddedRedis(self.folder / f"redis-{i}", node.redis_port, binary,
                                   host=node.host, launcher=node.launcher,
                                   password=self.password, extra=extra)
            server.start(log=(self.folder / f"redis-{i}.log").open("ab"))
            self.servers.append(server)
        for i, node in enumerate(self.nodes):
            conf = self.folder / f"sentinel-{i}.conf"
            # The password lives in this file (0600), never on a command line.
            conf.write_text("\n".join([
                f"bind {node.host}", f"port {node.sentinel_port}", "daemonize no",
                f"dir {self.folder}", 'logfile ""',
                f"sentinel monitor {MASTER} {primary.host} {primary.redis_port} 2",
                f"sentinel auth-pass {MASTER} {self.password}",
                f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER} 5000",
                f"sentinel parallel-syncs {MASTER} 1", "",
            ]))
            conf.chmod(0o600)
            log = (self.folder / f"sentinel-{i}.log").open("ab")
            self.sentinels.append(subprocess.Popen(
                [*node.launcher, DEBIAN_SENTINEL, str(conf)], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        settings = RedisSettings(
            host=self.nodes[0].host, port=self.nodes[0].sentinel_port, password=self.password,
            sentinels=tuple((n.host, n.sentinel_port) for n in self.nodes), master_name=MASTER)
        self._wait_ready()
        return settings

    def _wait_ready(self, timeout_s: float = 30) -> None:
        """Until every replica is in sync and every Sentinel knows them all."""
        deadline = time.monotonic() + timeout_s
        want = len(self.nodes) - 1
        while time.monotonic() < deadline:
            try:
                if all(self._in_sync(i) for i in range(1, len(self.nodes))) \
                        and all(self._replicas_known(n) >= want for n in self.nodes):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the Sentinels did not see the primary and its replicas in "
                           f"{timeout_s:.0f} s; logs in {self.folder}")

    def _in_sync(self, i: int) -> bool:
        node = self.nodes[i]
        client = redis.Redis(host=node.host, port=node.redis_port, password=self.password,
                             socket_timeout=1)
        try:
            return client.info("replication").get("master_link_status") == "up"
        finally:
            client.close()

    def _replicas_known(self, node: Node) -> int:
        client = redis.Redis(host=node.host, port=node.sentinel_port, socket_timeout=1)
        try:
            return len(client.sentinel_slaves(MASTER))
        finally:
            client.close()

    def primary(self) -> tuple[str, int]:
        """Where the Sentinels say the primary is now."""
        for node in self.nodes:
            client = redis.Redis(host=node.host, port=node.sentinel_port, socket_timeout=1)
            try:
                found = client.sentinel_get_master_addr_by_name(MASTER)
                if isinstance(found, tuple | list):
                    host = found[0].decode() if isinstance(found[0], bytes) else str(found[0])
                    return host, int(found[1])
            except (redis.RedisError, TypeError):
                continue
            finally:
                client.close()
        raise RuntimeError("no Sentinel answered")

    def restore(self, timeout_s: float = 60) -> None:
        """Start again every server that is down (the Sentinels make it a
        replica of the primary now), and wait until every replica is in sync."""
        for i, server in enumerate(self.servers):
            if server.proc is None or server.proc.poll() is not None:
                server.start(log=(self.folder / f"redis-{i}.log").open("ab"))
        primary = self.primary()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            links = []
            for node in self.nodes:
                if (node.host, node.redis_port) == primary:
                    continue
                client = redis.Redis(host=node.host, port=node.redis_port,
                                     password=self.password, socket_timeout=1)
                try:
                    links.append(client.info("replication").get("master_link_status"))
                except redis.RedisError:
                    links.append(None)
                finally:
                    client.close()
            if links and all(link == "up" for link in links):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the replicas were not in sync within {timeout_s:.0f} s")

    def server_at(self, address: tuple[str, int]) -> EmbeddedRedis:
        for server, node in zip(self.servers, self.nodes, strict=True):
            if (node.host, node.redis_port) == address:
                return server
        raise KeyError(address)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.terminate()
        for proc in self.sentinels:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for server in self.servers:
            server.stop()
