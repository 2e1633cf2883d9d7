"""Named points in a pipeline step's life where the reliability suite kills a
worker: ``run`` (the step's model is running), ``hop`` (it has returned, and
nothing is handed on yet), ``handed`` (the hop and its ack are done, and the
task has not returned). Off unless ``TURNOUT_FAULT_DIR`` names a folder.

A point is armed by a file ``arm-<point>`` in that folder, which may name the
one step (a model's name, a transform's) to stop at. A pool child that
reaches an armed point writes ``<point>-<task id>-<pid>`` beside it and waits
while that file is there (at most a minute): the test sees it, disarms the
point, and kills the process.
"""

from __future__ import annotations

import os
import time

from turnout.core.settings import Settings

POINTS = ("run", "hop", "handed")
_WAIT_S = 60.0


def pause(settings: Settings, point: str, task_id: str, step: str) -> None:
    folder = settings.fault_dir
    if folder is None:
        return
    try:
        only = (folder / f"arm-{point}").read_text().strip()
    except OSError:
        return  # not armed
    if only and only != step:
        return
    flag = folder / f"{point}-{task_id}-{os.getpid()}"
    flag.write_text(str(time.time()))
    until = time.monotonic() + _WAIT_S
    while flag.exists() and time.monotonic() < until:
        time.sleep(0.02)
