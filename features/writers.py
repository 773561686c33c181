"""Whose temporary files these are: temp names carry their writer as ``PID@HOST``, so that a later
run can tell a file left by a killed writer (removable) from one still being written. Used by the
workspace's atomic writes (``pipeline.workspace``) and by the CSV sources' temporary copies
(``features.sources``)."""

from __future__ import annotations

import os
import socket

HOST = socket.gethostname()


def writer_tag() -> str:
    """``PID@HOST`` of this process, as temp names carry it."""
    return f"{os.getpid()}@{HOST}"


def running(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    except OverflowError:
        return False
    return True
