"""The scale-out engine: the same Ibis feature expressions, executed by Spark.

Validation and canonicalisation (identity merge, role mapping, UTC) always run on DuckDB; for
Spark the canonical ``events`` and ``customers`` views are written to Parquet with
:func:`export_canonical`, and :class:`SparkEngine` reads those files.

Timestamps are naive UTC everywhere. DuckDB writes ``TIMESTAMP`` columns as Parquet
``TIMESTAMP(MICROS, isAdjustedToUTC=false)``; Spark reads them as ``TIMESTAMP_NTZ`` (wall-clock
values, no shift). Ibis casts them to Spark's ``TIMESTAMP`` (an instant) for comparisons and
``unix_timestamp``, and that cast reads the wall clock in the session time zone, so the session
must be UTC: with any other zone every feature involving time would move by the zone's offset.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.engines import FeatureEngine

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import SparkSession

MIN_JAVA = 17
PYSPARK_HINT = "install the spark extra: `make test` does, or `uv sync --extra spark`"
JAVA_HINT = (
    f"the Spark engine needs Java {MIN_JAVA} or newer; install it with "
    "`apt-get update && apt-get install -y openjdk-17-jre-headless` "
    "(or point JAVA_HOME at a Java 17+ installation)"
)


class EngineUnavailable(RuntimeError):
    """The Spark engine cannot start on this machine; the message says what is missing and how to fix it."""


def check_pyspark() -> None:
    """Raise :class:`EngineUnavailable` unless pyspark (and Ibis' pyspark backend) can be imported."""
    try:
        import pyspark  # noqa: F401
        import ibis.backends.pyspark  # noqa: F401
    except ImportError as e:
        raise EngineUnavailable(f"pyspark is not installed ({e}); {PYSPARK_HINT}") from e


def java_executable() -> str | None:
    """The ``java`` that PySpark will launch: ``$JAVA_HOME/bin/java`` if JAVA_HOME is set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which("java")


def parse_java_version(output: str) -> int | None:
    """Major version from ``java -version`` output (``"1.8.0_392"`` -> 8, ``"17.0.15"`` -> 17)."""
    m = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # Java 8 and older: "1.8.0"
        major = int(m.group(2))
    return major


def check_java() -> int:
    """Return the Java major version, or raise :class:`EngineUnavailable` if Java is missing or too old.

    Run before the JVM starts, so the user gets this message instead of a Py4J stack trace.
    """
    java = java_executable()
    if java is None:
        where = f"JAVA_HOME={os.environ['JAVA_HOME']} has no bin/java" if os.environ.get("JAVA_HOME") \
            else "no `java` on PATH"
        raise EngineUnavailable(f"Java not found ({where}); {JAVA_HINT}")
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise EngineUnavailable(f"`{java} -version` failed ({e}); {JAVA_HINT}") from e
    text = (out.stderr or "") + (out.stdout or "")
    major = parse_java_version(text)
    if out.returncode != 0 or major is None:
        first = text.strip().splitlines()[0] if text.strip() else f"exit code {out.returncode}"
        raise EngineUnavailable(f"could not read the Java version from `{java} -version` ({first}); {JAVA_HINT}")
    if major < MIN_JAVA:
        raise EngineUnavailable(f"found Java {major} at {java}; {JAVA_HINT}")
    return major


def session_conf(scratch: Path, master: str = "local[2]") -> dict[str, str]:
    """Spark settings for this use: UTC, local-friendly, loopback only, nothing written to the cwd."""
    return {
        "spark.master": master,
        "spark.app.name": "dynseg",
        # Naive timestamps are UTC; casts between TIMESTAMP_NTZ and TIMESTAMP use this zone.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.extraJavaOptions": f"-Duser.timezone=UTC -Dderby.system.home={scratch / 'derby'}",
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        # Parquet written by DuckDB: TIMESTAMP -> isAdjustedToUTC=false -> read as TIMESTAMP_NTZ,
        # proleptic Gregorian calendar (no rebase of old dates, never fail on them).
        "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
        "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
        "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
        "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
        "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        # Small data on a laptop: few shuffle partitions, no UI, loopback networking only.
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "4",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.local.dir": str(scratch / "local"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None) -> SparkSession:
    """Create (or reuse) a SparkSession configured for feature computation; ``conf`` overrides defaults.

    Checks pyspark and Java first and raises :class:`EngineUnavailable` with the fix. A session
    already running in this process is reused; its static settings (master, JVM options) stay as
    they were, the SQL settings here are applied to it.
    """
    check_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        check_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    scratch = Path(tempfile.mkdtemp(prefix="dynseg-spark-"))
    settings = session_conf(scratch, master) | dict(conf or {})
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if active is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    for key, value in settings.items():  # a reused session: apply what is settable at runtime
        if key.startswith("spark.sql.") and not key.startswith("spark.sql.warehouse"):
            session.conf.set(key, value)
    session.sparkContext.setLogLevel("WARN")
    return session


class SparkEngine(FeatureEngine):
    """Ibis over a Spark session reading the canonical views exported as Parquet."""

    name = "spark"

    def __init__(self, session: SparkSession, events_path: Path, customers_path: Path):
        check_pyspark()
        self.session = session
        self._suffix = uuid.uuid4().hex[:8]
        self._views = {"events": f"dynseg_events_{self._suffix}", "customers": f"dynseg_customers_{self._suffix}"}
        for name, path in (("events", events_path), ("customers", customers_path)):
            session.read.parquet(str(Path(path).resolve())).createOrReplaceTempView(self._views[name])
        self._backend = ibis.pyspark.connect(session)

    def events(self) -> ir.Table:
        return self._backend.table(self._views["events"])

    def customers(self) -> ir.Table:
        return self._backend.table(self._views["customers"])

    def execute(self, expr: ir.Table) -> pd.DataFrame:
        df = self._backend.execute(expr)
        for col in df.columns:  # timestamps: naive UTC datetime64, like the DuckDB engine
            s = df[col]
            if isinstance(s.dtype, pd.DatetimeTZDtype):
                df[col] = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return df

    def close(self) -> None:
        """Drop the temp views; the session belongs to the caller and stays up."""
        for view in self._views.values():
            self.session.catalog.dropTempView(view)


def export_canonical(con: duckdb.DuckDBPyConnection, folder: Path) -> tuple[Path, Path]:
    """Write the canonical ``events`` and ``customers`` views to ``folder/{events,customers}.parquet``.

    Each file is written under a temp name and moved into place, so a reader never sees half a file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in ("events", "customers"):
        final = folder / f"{name}.parquet"
        tmp = folder / f".{name}.parquet.{uuid.uuid4().hex}.tmp"
        try:
            path_sql = str(tmp).replace("'", "''")
            con.execute(f"COPY (SELECT * FROM {name}) TO '{path_sql}' (FORMAT parquet)")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        out.append(final)
    return out[0], out[1]


__all__ = ["EngineUnavailable", "SparkEngine", "check_java", "check_pyspark", "export_canonical", "spark_session"]
