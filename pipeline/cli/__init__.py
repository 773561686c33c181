"""The ``dynseg`` command line: one module per command group, thin commands over pipeline.jobs."""

from __future__ import annotations

import sys

from pipeline.cli.app import app
from pipeline.cli.common import on_sigterm


def main() -> None:
    on_sigterm()
    app(prog_name="dynseg")


__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
