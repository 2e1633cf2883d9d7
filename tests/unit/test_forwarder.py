"""The rehearsal's delaying forwarder (scenario I's stand-in for netem's
delay): bytes pass untouched and in order, each way held at least the delay
its control file names, changed while a connection is open."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support.procs import free_port


def _echo_server() -> int:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            conn, _ = server.accept()

            def echo(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return int(server.getsockname()[1])


def _round_trip(conn: socket.socket, payload: bytes) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    conn.sendall(payload)
    got = b""
    while len(got) < len(payload):
        got += conn.recv(1 << 20)
    return time.perf_counter() - t0, got


def test_the_forwarder_delays_each_way_and_keeps_the_bytes(tmp_path: Path) -> None:
    control = tmp_path / "delay_ms"
    control.write_text("0")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnout.benchmarks.chaos.cluster.forwarder", "127.0.0.1",
         str(port), "127.0.0.1", str(_echo_server()), str(control)])
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the forwarder did not start"
                time.sleep(0.1)
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            payload = os.urandom(1 << 20)
            _, got = _round_trip(conn, payload)
            assert got == payload
            control.write_text("25")
            time.sleep(0.6)  # read again every 0.2 s
            slowest_first = sorted(_round_trip(conn, b"x" * 64)[0] for _ in range(5))
            # 25 ms each way: no round trip under 50 ms.
            assert slowest_first[0] >= 0.050, slowest_first
            _, got = _round_trip(conn, payload)
            assert got == payload
    finally:
        proc.terminate()
        proc.wait(10)
