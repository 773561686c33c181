"""The workspace: the one folder dynseg writes to.

Layout: ``dynseg.duckdb`` (the embedded database: identity map, later features, runs and
segments), ``mlflow.db`` + ``mlruns/`` (default MLflow store), ``data/`` (generated demo data),
``reports/``. Every write is atomic: tables in one DuckDB transaction, files via a temp name and
a rename, so a failed run leaves what was there before.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "dynseg.duckdb"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def tracking_uri(self, configured: str | None = None) -> str:
        """MLFLOW_TRACKING_URI, else the configured URI, else a SQLite store in the workspace."""
        return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{self.root / 'mlflow.db'}"

    def write_tables(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
        """Replace workspace tables with the results of queries on ``con``, all in one transaction."""
        self.root.mkdir(parents=True, exist_ok=True)
        con.execute(f"ATTACH '{self.db_path}' AS ws")
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                for name, query in tables.items():
                    con.execute(f'CREATE OR REPLACE TABLE ws."{name}" AS {query}')
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.execute("DETACH ws")

    def write_json(self, relpath: str, obj: Any) -> Path:
        return write_atomic(self.root / relpath, json.dumps(obj, indent=2, default=str).encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def check_writable(path: Path, example: str | None = None) -> None:
    """Refuse, before any work, an output path that cannot become a file: a folder (bad usage,
    with ``example`` as a file name to put in it), under a file, or in a folder this process
    cannot write."""
    from features.asof import BadValue

    path = Path(path)
    if path.is_dir():
        raise BadValue(f"{path} is a folder; expected a file path (e.g. {path / (example or 'out' + (path.suffix or '.parquet'))})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, not a folder; choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: no permission to write in {parent}; choose a folder you can write")


def write_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to ``path`` via a temp file in the same folder and a rename."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return path


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write; renamed onto ``path`` when the block
    succeeds, removed when it fails, so ``path`` is either what was there before or complete.
    For writers that stream to a file (a large Parquet file need not be held in memory first)."""
    check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); the file gets what a plain open() would give
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
