"""Whose temporary files these are: temp names carry their writer as ``PID@HOST``, so that a later
run can tell a file left by a killed writer (removable) from one still being written. Used by the
workspace's atomic writes (``pipeline.workspace``), the CSV sources' temporary copies
(``features.sources``) and Spark's scratch folder (``features.engines.spark``)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

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


def sweep_killed(prefix: str) -> None:
    """Remove the temp folders (``<prefix>...<pid>@<host>~...``) of runs killed outright on this host
    (SIGKILL, the out-of-memory killer): CSV copies, Spark's scratch folder."""
    for found in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}*@{glob.escape(HOST)}~*"):
        m = re.search(r"-(\d+)@", found.name)
        if m is not None and not running(int(m.group(1))):  # (this process runs: its own copies stay)
            shutil.rmtree(found, ignore_errors=True)
