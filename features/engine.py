"""The one place that opens the embedded engine (DuckDB)."""

from __future__ import annotations

import os

import duckdb


def connect(threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose session time zone is UTC.

    UTC matters: timestamp text without an offset is read in the session zone, and the data
    contract says such values are UTC.
    """
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    threads = threads or int(os.environ.get("DYNSEG_THREADS", "0")) or None
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    return con
