"""The one place that opens the embedded engine (DuckDB)."""

from __future__ import annotations

import os
import re

import duckdb


def connect(threads: int | None = None, memory_limit: str | None = None,
            temp_directory: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose session time zone is UTC.

    UTC matters: timestamp text without an offset is read in the session zone, and the data
    contract says such values are UTC. ``memory_limit`` (e.g. ``"2GB"``) caps what DuckDB holds;
    above it, large aggregates spill to ``temp_directory`` instead of growing the process.

    dynseg's views and tables (``raw_events``, ``events``, ``customers``, ...) go in this in-memory
    database, never ``TEMP``: DuckDB binds a view of an attached source database (``format:
    duckdb``) with the temporary catalog first, so a warehouse view over its own ``customers``
    table would read dynseg's ``customers`` view instead (and recurse).
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    no_progress_bar(con)
    # Give memory back after each big query instead of keeping it cached for the next one: a
    # scoring run's later stages (models, exports) then do not stack on DuckDB's peak. At 1M
    # customers this took the process from 2.5 GB to 1.4 GB after the feature query.
    con.execute("SET allocator_flush_threshold = '32MB'")
    con.execute("SET allocator_background_threads = true")
    threads = threads or _env_threads()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    memory_limit = memory_limit or _env_memory_limit()
    if memory_limit:
        con.execute("SET memory_limit = ?", [memory_limit])
    if temp_directory:
        con.execute("SET temp_directory = ?", [temp_directory])
    return con


def no_progress_bar(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB's own progress bar off: it went into the output between rich's lines. In Jupyter,
    DuckDB refuses any change of the setting without ipywidgets; it draws none there anyway."""
    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:
        pass


#: what configs/project.yaml's memory_limit accepts (pipeline.config.Settings), for the variable too
MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$")


def _env_threads() -> int | None:
    """``DYNSEG_THREADS`` (the settings' ``threads`` for one run), checked: a bad value named a
    DuckDB parser error in a traceback, or an int() error that named no variable."""
    value = os.environ.get("DYNSEG_THREADS", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable DYNSEG_THREADS: expected a whole number of threads, 1 or more; "
                         f"found {value!r}. Fix it, or unset it to use configs/project.yaml's threads")
    return int(value)


def _env_memory_limit() -> str | None:
    """``DYNSEG_MEMORY_LIMIT``, checked as configs/project.yaml's memory_limit is."""
    value = os.environ.get("DYNSEG_MEMORY_LIMIT", "").strip()
    if not value:
        return None
    if not MEMORY_LIMIT.match(value):
        raise ValueError(f"environment variable DYNSEG_MEMORY_LIMIT: expected a size such as 2GB or 1500MB; found "
                         f"{value!r}. Fix it, or unset it to use configs/project.yaml's memory_limit")
    return value
