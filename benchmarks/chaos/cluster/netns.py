"""Hosts on one machine: a Linux network namespace per host, each with one
veth link to a bridge in a namespace of its own (the switch), on a private
/24. Nothing is routed out of these namespaces: the machine's own network is
never touched. Needs root and iproute2 (``ip``, ``tc``).

A fault is made on the switch's side of a host's link, as a real network
would make it: ``cut`` drops every packet both ways (the host's own
interface stays up, so its sockets see silence, not an error). ``lose``
drops a share of the packets every host sends (nftables, at random). Delay
would be netem's, but this machine's kernel has none (nor nfqueue):
``forwarder.py`` holds each chunk in front of a server instead.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
LOSS_TABLE = "turnout_loss"


class NoNamespaces(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, or a
    sandbox that forbids them); the reason is the message."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _tc(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "tc", *args], check=check,
                          capture_output=True, text=True)


def _nft(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], check=check,
                          capture_output=True, text=True)


def loss_missing() -> str | None:
    """Why packet loss cannot be made here, or None."""
    if shutil.which("nft") is None:
        return "nft (nftables) is not installed: apt-get install nftables"
    return None


def available() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} (iproute2) is not installed"
    probe = f"tnprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Network:
    """``hosts`` by name, each given the last octet of its address."""

    hosts: dict[str, int]
    prefix: str = "tn"
    subnet: str = "10.77.0"
    _made: list[str] = field(default_factory=list)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return f"{self.subnet}.{self.hosts[host]}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-switch"

    def _port(self, host: str) -> str:
        # The switch's end of a host's link (interface names are 15 bytes at most).
        return f"p{self.hosts[host]}"

    def create(self) -> None:
        why = available()
        if why:
            raise NoNamespaces(why)
        self.destroy()  # what an earlier run killed before it could clean up
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        sw = ["-n", self.switch]
        _ip(*sw, "link", "add", "br0", "type", "bridge")
        _ip(*sw, "link", "set", "br0", "up")
        _ip(*sw, "link", "set", "lo", "up")
        for host in self.hosts:
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self._made.append(ns)
            port = self._port(host)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
                "netns", self.switch)
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip(*sw, "link", "set", port, "master", "br0")
            _ip(*sw, "link", "set", port, "up")

    def destroy(self) -> None:
        names = {self.switch, *(self.ns(h) for h in self.hosts)}
        listed = _ip("netns", "list", check=False).stdout.split()
        for name in names & set(listed):
            _ip("netns", "del", name, check=False)
        self._made.clear()

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host)]

    def enter(self, host: str) -> None:
        """Move this process into ``host``'s namespace. Call it before any
        thread starts: ``setns`` moves the calling thread only, and threads
        started later inherit it."""
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise NoNamespaces(f"setns into {self.ns(host)}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    # -- faults -------------------------------------------------------------------

    def cut(self, host: str) -> None:
        """Every packet to and from ``host`` dropped at the switch: its own
        interface stays up and its TCP connections stay open, silent, as
        behind a failed switch port, and carry on if the link heals in time."""
        _ip("-n", self.switch, "link", "set", self._port(host), "down")

    def heal(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self._port(host), "up")

    def netem(self) -> str | None:
        """Why netem's delay and loss cannot be used here (None when it can)."""
        probe = _tc(self.switch, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                    check=False)
        if probe.returncode != 0:
            return f"this kernel has no netem qdisc ({probe.stderr.strip()})"
        _tc(self.switch, "qdisc", "del", "dev", "lo", "root", check=False)
        return None

    def lose(self, percent: float) -> None:
        """Drop ``percent`` % of the packets every host sends on its link, at
        random (each way of a round trip is a chance to lose one). Real
        packet loss: TCP retransmits, as it would over a lossy network."""
        self.unlose()
        per_10k = round(percent * 100)
        for host in self.hosts:
            _nft(self.ns(host), "add", "table", "inet", LOSS_TABLE)
            _nft(self.ns(host), "add", "chain", "inet", LOSS_TABLE, "out",
                 "{ type filter hook output priority 0 ; }")
            _nft(self.ns(host), "add", "rule", "inet", LOSS_TABLE, "out", "oifname", "eth0",
                 "numgen", "random", "mod", "10000", "<", str(per_10k), "counter", "drop")

    def unlose(self) -> None:
        for host in self.hosts:
            _nft(self.ns(host), "delete", "table", "inet", LOSS_TABLE, check=False)

    def dropped(self) -> int:
        """Packets ``lose`` has dropped, every host together."""
        total = 0
        for host in self.hosts:
            listed = _nft(self.ns(host), "-j", "list", "table", "inet", LOSS_TABLE, check=False)
            if listed.returncode != 0:
                continue
            for item in json.loads(listed.stdout).get("nftables", []):
                for expr in item.get("rule", {}).get("expr", []):
                    total += int(expr.get("counter", {}).get("packets", 0))
        return total
