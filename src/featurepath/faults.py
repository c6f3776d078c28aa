"""Named pause points, so that tests can kill a real process at an exact step.

A kill "while planning" lasts a few milliseconds in a normal run; a test that polls for it would
be flaky. With ``FEATUREPATH_PAUSE_AT=<name>`` in the environment, :func:`pause_point` of that
name writes ``FEATUREPATH_PAUSE_AT_FILE`` (if set, so the test knows the process is there) and
sleeps until killed. Without the variable it returns at once and costs one dictionary look-up.
"""

from __future__ import annotations

import os
import time


def pause_point(name: str) -> None:
    """Block forever at this point when ``FEATUREPATH_PAUSE_AT`` names it (tests only)."""
    if os.environ.get("FEATUREPATH_PAUSE_AT") != name:
        return
    marker = os.environ.get("FEATUREPATH_PAUSE_AT_FILE")
    if marker:
        with open(marker, "w") as fh:
            fh.write(str(os.getpid()))
    while True:
        time.sleep(3600)
