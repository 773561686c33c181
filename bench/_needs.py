"""What the benchmark scripts need beyond `make demo`'s environment."""
from __future__ import annotations

import sys


def psutil_or_exit(script: str):
    """``psutil``, or exit with how to get it (it is a dev tool: ``make demo`` does not install it)."""
    try:
        import psutil
    except ImportError:
        sys.exit(f"{script} measures memory with psutil, one of the test environment's tools, which is not "
                 "installed here. Run `make env-dev` (or `make test`, which does it), then run it again.")
    return psutil


# -- argument checks shared by the scripts (argparse types: a bad value is a usage line, not a traceback)
def count(text: str) -> int:
    """A whole number of at least 1, written plainly or as a size (``3000``, ``20k``, ``1M``, ``1_000``)."""
    import argparse

    t = text.strip().upper().replace("_", "")
    mult = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(t[-1:], 1)
    try:
        n = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number: expected a count such as 3000, 20k or 1M") from None
    import math

    if not math.isfinite(n) or n < 1 or n != int(n):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1 (3000, 20k, 1M)")
    return int(n)


def writable_out(path, ap) -> None:
    """Refuse, before any measuring, an ``--out`` whose folder cannot be made or written (the JSON
    is written at the end: a 50M run would otherwise lose ten minutes of figures)."""
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {path}: its folder cannot be made ({e.strerror}); name a writable path")
    if path.is_dir() or not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        ap.error(f"--out {path}: not a writable file; name a writable path")
