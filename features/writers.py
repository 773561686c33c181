"""Whose temporary files these are: temp names carry their writer as ``PID@HOST``, so that a later
run can tell a file left by a killed writer (removable) from one still being written. Used by the
workspace's atomic writes (``pipeline.workspace``), the CSV sources' temporary copies
(``features.sources``) and Spark's scratch folder (``features.engines.spark``)."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the block runs, and acted on after it: for steps that
    must not stop halfway (the JVM starting: interrupted there, PySpark deletes the folder the JVM
    is to write its address to, and the JVM, which ignores SIGINT, lives on as an orphan holding
    its memory; a set of files renamed into place). Only the main thread can set handlers;
    elsewhere this holds nothing back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    install = signal.signal
    for s in previous:
        install(s, lambda signum, frame: received.append(signum))

    def kept_back(signum, handler):  # a library's own handler set in the block (pyspark's SparkContext
        if signum in previous:       # sets one for SIGINT, which called the JVM mid-call and lost the signal)
            return signal.getsignal(signum)
        return install(signum, handler)

    signal.signal = kept_back
    try:
        yield
    finally:
        signal.signal = install
        for s, handler in previous.items():
            install(s, handler)
        if received:
            signal.raise_signal(received[0])
