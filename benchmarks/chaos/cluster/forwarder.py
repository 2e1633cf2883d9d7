"""A TCP forwarder that holds every chunk for a set delay, each way: the
rehearsal's stand-in for netem's delay on a kernel that has no netem qdisc
(nor nfqueue, to delay packets from user space).

``python -m turnout.benchmarks.chaos.cluster.forwarder LISTEN_HOST LISTEN_PORT
TARGET_HOST TARGET_PORT CONTROL_FILE``, run in a server host's namespace in
front of its server. The control file holds the one-way delay in
milliseconds; it is read again every 0.2 s, so a scenario changes the delay
of open connections too. Bytes pass through untouched (TLS stays end to
end), in order, each chunk released ``delay`` after it arrived: a round trip
through it takes twice the delay more than without it, however many
requests a connection has in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from pathlib import Path

CHUNK = 256 * 1024


class Delay:
    def __init__(self, control: Path) -> None:
        self.control = control
        self.seconds = 0.0

    async def follow(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.seconds = max(0.0, float(self.control.read_text().strip() or 0) / 1000)
            await asyncio.sleep(0.2)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: Delay) -> None:
    """Copy one direction. Chunks go through a queue to a sender that waits
    out each one's own release time, so a burst is delayed once, not once per
    chunk (a link's latency, not a throttle)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            due, data = await queue.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(CHUNK)
            queue.put_nowait((time.monotonic() + delay.seconds, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
    finally:
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.close()


async def serve(listen: tuple[str, int], target: tuple[str, int], control: Path) -> None:
    delay = Delay(control)
    follower = asyncio.ensure_future(delay.follow())

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer, delay), _pipe(up_reader, writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(connection, *listen, backlog=1024)
    try:
        async with server:
            await server.serve_forever()
    finally:
        follower.cancel()


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    listen = (argv[0], int(argv[1]))
    target = (argv[2], int(argv[3]))
    run = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(listen, target, Path(argv[4])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
