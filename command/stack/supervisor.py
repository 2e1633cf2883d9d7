"""A supervised child process: started in its own process group, killed with
its group, and sent SIGTERM by the kernel if its supervisor dies.

``turnout up`` (``turnout.stack.up``) runs each part of the stack as one of these.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger("turnout.up")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `turnout up` itself dies, even
    by SIGKILL, so that no part outlives it (Linux only; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Part:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)

    def start(self) -> None:
        self.log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,  # its own process group: Ctrl-C reaches us, not it
            # `up` runs no threads, so preexec_fn cannot deadlock here.
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float) -> None:
        if self.proc is not None:
            # SIGTERM to the leader alone: a Celery worker's SIGTERM is a warm
            # shutdown, which finishes the jobs in hand, but its pool children
            # die of a SIGTERM of their own (Celery resets it in them), so the
            # group must not get it.
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, grace_s)
            # Kill what is left of the group: pool children, stragglers.
            self.signal_group(signal.SIGKILL)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
