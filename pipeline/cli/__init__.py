"""The ``dynseg`` command line: one module per command group, thin commands over pipeline.jobs."""

from __future__ import annotations

import sys

# Ctrl-C while the command line's modules load (its first second): one line and exit 130, as
# later, not the traceback of whichever import it landed in
try:
    from pipeline.cli.app import app
    from pipeline.cli.common import on_sigterm
except KeyboardInterrupt:
    sys.stderr.write("Interrupted.\n")
    raise SystemExit(130) from None


def main() -> None:
    on_sigterm()
    app(prog_name="dynseg")


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
