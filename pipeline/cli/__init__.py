"""The ``dynseg`` command line: one module per command group, thin commands over pipeline.jobs."""

from __future__ import annotations

import sys

from features.writers import signals_held

# Ctrl-C while the command line's modules load (its first second): one line and exit 130, as
# later, not the traceback of whichever import it landed in. Held until they are loaded: landing
# in pydantic's schema building (Rust), it became a SchemaError, or was lost.
try:
    with signals_held():
        from pipeline.cli.app import app
        from pipeline.cli.common import on_sigterm, said_stopped
except KeyboardInterrupt:
    sys.stderr.write("Interrupted.\n")
    raise SystemExit(130) from None


def main() -> None:
    on_sigterm()
    said_stopped.clear()  # (a process that runs several commands: a test's, a notebook's)
    try:
        app(prog_name="dynseg")
    except KeyboardInterrupt:  # before a command's own handling: typer building the command line
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
    except SystemExit as e:  # typer's silent 130 for a Ctrl-C between parsing and a command's handling
        if e.code == 130 and not said_stopped:
            sys.stderr.write("Interrupted.\n")
        _done()
        raise


def _done() -> None:
    """The command has finished, its exit code decided: a SIGTERM or SIGHUP from here on is ignored.
    Python puts back the default action of a signal it handled as it shuts down (MLflow's and DuckDB's
    exit work can take seconds), so a scheduler's late SIGTERM killed a run that had committed, with
    143 and no word: it retried a run that had succeeded."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
