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
