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

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir
import pandas as pd

from features.engines import FeatureEngine
from features.writers import signals_held

if TYPE_CHECKING:
    import duckdb
    from pyspark.sql import DataFrame, SparkSession

MIN_JAVA = 17
PYSPARK_HINT = ("install the spark extra: `make env-spark` (`make test` does too), or "
                "`.venv/bin/uv sync --frozen --inexact --extra spark --no-dev` (the lock's versions)")
JAVA_HINT = (
    f"the Spark engine needs Java {MIN_JAVA} or newer; install it with "
    "`apt-get update && apt-get install -y openjdk-17-jre-headless` "
    "(or point JAVA_HOME at a Java 17+ installation)"
)


class EngineUnavailable(RuntimeError, ValueError):
    """The Spark engine cannot start on this machine; the message says what is missing and how to fix it.

    Also a ValueError: like a bad setting, the CLI reports it in one line (exit code 1), no stack trace.
    """


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


class MasterUnreachable(EngineUnavailable):
    """No Spark master answers at the configured address: often a master not (yet) up or a network
    in trouble, so a scheduler may retry (exit 75); a name that does not resolve is a setting to fix."""

    def __init__(self, message: str, try_later: bool = True):
        super().__init__(message)
        self.try_later = try_later


#: How long one master address gets to accept a connection before it counts as unreachable.
MASTER_CONNECT_TIMEOUT = 5.0


def master_addresses(master: str) -> list[tuple[str, int]]:
    """The (host, port) pairs a master URL asks the driver to connect to, for the masters whose
    address is in the URL: a standalone master (``spark://h1:7077,h2:7077``, port 7077 by default)
    and Kubernetes' API server (``k8s://https://h:6443``, port 443 or 80 by default). None for
    local mode, YARN (its address is in Hadoop's configuration) or anything else."""
    if master.startswith("spark://"):
        out = []
        for part in master[len("spark://"):].rstrip("/").split(","):
            part = part.strip()
            if part.startswith("["):  # [::1]:7077
                host, _, rest = part[1:].partition("]")
                port = rest.removeprefix(":")
            elif part.count(":") == 1:
                host, _, port = part.partition(":")
            else:
                host, port = part, ""
            if host:
                out.append((host, int(port) if port.isdigit() else 7077))
        return out
    if master.startswith("k8s://"):
        from urllib.parse import urlsplit

        url = master[len("k8s://"):]
        url = url if "://" in url else f"https://{url}"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return []
        if parts.hostname:
            return [(parts.hostname, port or (80 if parts.scheme == "http" else 443))]
    return []


def check_master(master: str, where: str = "spark.master", timeout: float = MASTER_CONNECT_TIMEOUT) -> None:
    """Raise :class:`MasterUnreachable` unless one of the master's addresses accepts a TCP
    connection. Spark itself retries a standalone master three times, 20 s apart, and prints about a
    hundred log lines before failing with "Cannot call methods on a stopped SparkContext"; this says
    at once which address did not answer, and why."""
    import os
    import socket

    if master == "yarn" and not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        # Spark finds the cluster through these; without them it failed after its JVM started, with a
        # Java stack and a summary blaming "a setting Java refuses"
        raise MasterUnreachable(f"spark.master is yarn ({where}), and neither HADOOP_CONF_DIR nor YARN_CONF_DIR is "
                                "set: Spark finds the YARN cluster through the folder that holds its yarn-site.xml. "
                                "Set HADOOP_CONF_DIR to it; or run on this machine with `--engine duckdb`, or "
                                "master: local[2]", try_later=False)
    tried = []
    for host, port in master_addresses(master):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except socket.gaierror as e:
            tried.append((f"{host}:{port}", f"the name {host!r} does not resolve ({e.strerror or e})", False))
        except TimeoutError:
            tried.append((f"{host}:{port}", f"no answer within {timeout:g} s", True))
        except OSError as e:
            tried.append((f"{host}:{port}", (e.strerror or str(e)).lower(), True))
    if not tried:
        return
    said = "; ".join(f"{addr}: {why}" for addr, why, _ in tried)
    transient = any(t for *_, t in tried)
    fix = ("check that the master is running and that this machine can reach it (a firewall, a VPN), then run "
           "again" if transient else "correct the host name")
    raise MasterUnreachable(f"the Spark master {master!r} ({where}) cannot be reached from this machine ({said}): "
                            f"{fix}; or run on this machine with `--engine duckdb`, or master: local[2]",
                            try_later=transient)


def session_conf(scratch: Path, master: str = "local[2]") -> dict[str, str]:
    """Spark settings for this use: UTC, nothing written to the cwd; in local mode small and loopback-only."""
    out = {
        "spark.master": master,
        "spark.app.name": "dynseg",
        # Naive timestamps are UTC: casts between TIMESTAMP_NTZ and TIMESTAMP, timestamp literals
        # and unix_timestamp() all use the session zone. The JVM zone only matters to legacy
        # code paths, but UTC there too leaves nothing to the machine's zone.
        "spark.sql.session.timeZone": "UTC",
        # The JVM's own temp folders (spark-*) in the scratch folder too: swept with it after a kill
        "spark.driver.extraJavaOptions": (f"-Duser.timezone=UTC -Dderby.system.home={scratch / 'derby'} "
                                          f"-Djava.io.tmpdir={scratch}"),
        "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
        # Parquet from DuckDB: TIMESTAMP is written as TIMESTAMP(MICROS, isAdjustedToUTC=false);
        # read it as TIMESTAMP_NTZ (the wall clock as written, never shifted), in the proleptic
        # Gregorian calendar DuckDB uses (no rebase of dates before 1582, no failure on them).
        "spark.sql.parquet.inferTimestampNTZ.enabled": "true",
        "spark.sql.parquet.datetimeRebaseModeInRead": "CORRECTED",
        "spark.sql.parquet.int96RebaseModeInRead": "CORRECTED",
        # ...and if Spark writes Parquet: plain microsecond timestamps, not legacy INT96.
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.parquet.datetimeRebaseModeInWrite": "CORRECTED",
        "spark.sql.parquet.int96RebaseModeInWrite": "CORRECTED",
        # Catalog files under a temp dir, not spark-warehouse/ and metastore_db/ in the cwd.
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
    }
    if is_local(master):
        # One machine, small data: few shuffle partitions, no UI, loopback networking only
        # (on a cluster the executors must reach the driver, so these stay Spark's defaults).
        out |= {
            "spark.sql.shuffle.partitions": "4",
            "spark.default.parallelism": "4",
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            # shuffle files (blockmgr-*) in the scratch folder, not in /tmp beside it, where a
            # run killed outright left them for good
            "spark.local.dir": str(scratch / "local"),
        }
    return out


def is_local(master: str) -> bool:
    return master == "local" or master.startswith("local[")


_JAVA_OPTIONS = ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions")

#: The driver's logging: warnings and errors on stderr, as Spark's default does, without the
#: banner about that default and warnings that are noise here: no native Hadoop library (a local
#: run needs none), "Truncated the string representation of a plan" (the feature query is wide by
#: design), and SparkConf's note that a cluster manager overrides spark.local.dir (set for a local
#: run's scratch folder, on every run; SparkConf's errors still show).
LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
logger.hadoop_native.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoop_native.level = error
logger.plan_string.name = org.apache.spark.sql.catalyst.util.SparkStringUtils
logger.plan_string.level = error
logger.stream_sink.name = org.apache.spark.sql.execution.streaming.FileStreamSink
logger.stream_sink.level = error
logger.spark_conf_local_dir.name = org.apache.spark.SparkConf
logger.spark_conf_local_dir.level = error
"""


def spark_session(master: str = "local[2]", conf: dict[str, str] | None = None,
                  where: str = "spark.master") -> SparkSession:
    """Create (or reuse) a SparkSession configured for feature computation.

    ``conf`` overrides the defaults of :func:`session_conf`, except JVM options
    (``spark.{driver,executor}.extraJavaOptions``), which are appended to them. pyspark and Java
    are checked first: a missing piece raises :class:`EngineUnavailable` saying how to install
    it. A cluster's master that does not answer raises :class:`MasterUnreachable` naming ``where``
    (the setting and its file). A session already running in this process is reused; its static
    settings (master, JVM options) stay as they were, the runtime SQL settings here are applied to it.
    """
    check_pyspark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._gateway is None:  # the JVM is about to be launched: is there a usable Java?
        check_java()
        home = os.environ.get("SPARK_HOME")
        if home and not (Path(home) / "bin" / "spark-submit").is_file():  # pyspark would fail naming spark-submit
            raise EngineUnavailable(f"the environment variable SPARK_HOME is {home!r}, which holds no bin/spark-submit: "
                                    "point it at a Spark 4 installation, or unset it to use the Spark that comes with "
                                    "pyspark")
    if SparkContext._active_spark_context is None:
        check_master(master, where)
    if is_local(master):
        # Local Python workers must import what this process imports (pandas; mlflow, lightgbm
        # and dynseg for models scored as Spark UDFs): this interpreter, whatever PYSPARK_PYTHON says.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    scratch = Path(tempfile.gettempdir())
    if SparkContext._active_spark_context is None:  # a new context gets its own scratch dir
        from features.writers import sweep_killed, writer_tag

        sweep_killed("dynseg-spark-")  # those of runs killed outright (kill -9): shuffle files, the log settings
        scratch = Path(tempfile.mkdtemp(prefix=f"dynseg-spark-{writer_tag()}~"))
        atexit.register(shutil.rmtree, scratch, True)
    settings = session_conf(scratch, master)
    if SparkContext._gateway is None:
        log_conf = scratch / "log4j2.properties"
        log_conf.write_text(LOG4J2)
        settings["spark.driver.extraJavaOptions"] += f" -Dlog4j2.configurationFile={log_conf.as_uri()}"
    for key, value in (conf or {}).items():
        settings[key] = f"{settings[key]} {value}" if key in _JAVA_OPTIONS and key in settings else str(value)
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    # An existing session keeps its static settings; getOrCreate applies the modifiable ones.
    with signals_held() if SparkContext._gateway is None else contextlib.nullcontext():
        return builder.getOrCreate()


#: The sessions whose calls a :meth:`SparkEngine.stopped_by_signals` guards now (its handlers in force).
_GUARDED: list = []


class SparkEngine(FeatureEngine):
    """Ibis over a Spark session reading the canonical views exported as Parquet."""

    name = "spark"

    def __init__(self, session: SparkSession, events_path: Path | str, customers_path: Path | str,
                 consents_path: Path | str | None = None, owned: Path | None = None):
        """``owned``: a folder holding the input files that belongs to this engine alone; removed
        on :meth:`close` (or at exit, if the process ends first)."""
        check_pyspark()
        self.session = session
        self._owned = owned
        if owned is not None:
            atexit.register(self._remove_owned)
        # Temp views with unique names: two engines on one session never see each other's data.
        suffix = uuid.uuid4().hex[:8]
        paths = {"events": events_path, "customers": customers_path, "consents": consents_path}
        paths = {name: path for name, path in paths.items() if path is not None}
        self._views = {name: f"dynseg_{name}_{suffix}" for name in paths}
        for name, path in paths.items():
            location = str(path) if "://" in str(path) else str(Path(path).resolve())
            # Hadoop reads a path as a glob: a workspace in a folder named `ws[1]` matched nothing
            session.read.parquet(re.sub(r"([\[\]{}*?\\])", r"\\\1", location)).createOrReplaceTempView(self._views[name])
        # Ibis' connect also (re)sets the session time zone to UTC, which the features rely on.
        self._backend = ibis.pyspark.connect(session)

    def events(self) -> ir.Table:
        return self._backend.table(self._views["events"])

    def customers(self) -> ir.Table:
        return self._backend.table(self._views["customers"])

    def consents(self) -> ir.Table | None:
        return self._backend.table(self._views["consents"]) if "consents" in self._views else None

    def execute(self, expr: ir.Table) -> pd.DataFrame:
        """Run ``expr`` on Spark; a pandas frame typed like the DuckDB engine's.

        Results come back through Arrow (``DataFrame.toArrow``), not ``toPandas``: ``toPandas``
        coerces timestamps to nanoseconds and fails outside 1677-2262 (a ``9999-12-31``
        "never" date), while DuckDB's engine keeps microseconds. Spark ``TIMESTAMP`` results
        (instants, rendered in the UTC session zone) become naive UTC like ``TIMESTAMP_NTZ`` ones.
        """
        import pyarrow as pa
        import pyarrow.types as pat
        from ibis.formats.pandas import PandasData

        table_expr = expr.as_table()
        with self.stopped_by_signals():
            arrow = self.to_spark(table_expr).toArrow()
        columns = {}
        for name, col in zip(arrow.column_names, arrow.columns):
            if pat.is_timestamp(col.type) and col.type.tz is not None:
                col = col.cast(pa.timestamp(col.type.unit))  # same instant, as naive UTC
            # as the DuckDB engine does: columns with nulls go through Python objects, so that
            # the conversion below gives each Ibis type its one pandas dtype
            nested = pat.is_nested(col.type) or pat.is_dictionary(col.type)
            columns[name] = col.to_pylist() if nested or col.null_count else col.to_pandas()
        df = PandasData.convert_table(pd.DataFrame(columns), table_expr.schema())
        return expr.__pandas_result__(df)

    @contextlib.contextmanager
    def stopped_by_signals(self) -> Iterator[None]:
        """Ctrl-C (or SIGTERM, SIGHUP) during a query cancels Spark's jobs, then acts as the signal's
        handler would.

        Raised in the main thread while ``toArrow`` read the result, a KeyboardInterrupt left
        pyspark waiting in a ``finally`` for the JVM's serving thread, which waited for the reader
        that had gone: the command hung for good (a SIGINT to the process); a terminal's Ctrl-C
        ended as "Spark failed: Error while sending or receiving", exit 1. Here the handler only
        asks Spark, from another thread, to cancel its jobs; the query then fails (or ends), and
        the signal's own handler runs after it."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or self.session in _GUARDED:
            yield  # another thread's call, or inside a guard already (a scoring run's, around its queries)
            return
        _GUARDED.append(self.session)
        caught: list[int] = []
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        done = threading.Event()

        def keep_cancelling():
            # again and again until the call returns: a query is several jobs (one per stage with
            # adaptive execution), and one cancel between two of them cancels nothing
            while not done.is_set():
                try:
                    self.session.sparkContext.cancelAllJobs()
                except Exception:  # the JVM is gone (a signal to the group stops it too)
                    return
                done.wait(0.5)

        def cancel(signum, frame):
            if not caught:
                import logging

                if not logging.getLogger().handlers:  # py4j logs the cancelled call's error with its stack
                    logging.getLogger().addHandler(logging.NullHandler())
                threading.Thread(target=keep_cancelling, daemon=True).start()
            caught.append(signum)

        for s, h in previous.items():
            if callable(h):  # not where the signal is ignored
                signal.signal(s, cancel)
        try:
            yield
        except Exception:
            if not caught:
                raise
        finally:
            done.set()
            _GUARDED.remove(self.session)
            for s, h in previous.items():
                if callable(h):
                    signal.signal(s, h)
        if caught:  # the handler in force before the query decides: KeyboardInterrupt, the CLI's Terminated
            previous[caught[0]](caught[0], None)
            raise KeyboardInterrupt

    def to_spark(self, expr: ir.Table) -> DataFrame:
        """``expr`` as a Spark DataFrame: lazy, nothing is computed or brought to the driver."""
        table_expr = expr.as_table()
        self._backend._run_pre_execute_hooks(table_expr)  # registers in-memory tables, as execute() does
        return self.session.sql(self._backend.compile(table_expr))

    def close(self) -> None:
        """Drop the temp views and remove the owned input folder; the session belongs to the
        caller and stays up."""
        for view in self._views.values():
            self.session.catalog.dropTempView(view)
        if self._owned is not None:
            self._remove_owned()
            atexit.unregister(self._remove_owned)

    def _remove_owned(self) -> None:
        shutil.rmtree(self._owned, ignore_errors=True)


def _as_exported(con: duckdb.DuckDBPyConnection, view: str) -> str:
    """The select list of a view's export: the profile attributes as DuckDB's text. A listed
    attribute becomes a category as text (see ``_derive``), and the engines spell a number or a
    zoned time differently (``1e-07`` and ``1.0E-7``; ``03:00:00+00`` and ``03:00:00``): cast here,
    Spark reads the text DuckDB makes, and a model trained on one engine's features reads the other's."""
    if view != "customers":
        return "*"
    from features.contract import CUSTOMERS
    from features.normalize import ident

    contract = {c.name for c in CUSTOMERS}
    cols = con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall()
    return ", ".join(ident(c) if c in contract or t == "VARCHAR" else f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}"
                     for c, t in cols)


def export_canonical(con: duckdb.DuckDBPyConnection, folder: Path) -> tuple[Path, Path, Path | None]:
    """Write the canonical ``events`` and ``customers`` views (and ``consent_profiles``, when
    profiles were merged) to ``folder/{events,customers,consents}.parquet``; the third path is
    None without merged profiles.

    Each file is written under a temp name and moved into place, so a reader never sees half a file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    from features.load import has_consent_profiles

    merged = has_consent_profiles(con)
    out = []
    for view, name in (("events", "events"), ("customers", "customers"), ("consent_profiles", "consents")):
        if view == "consent_profiles" and not merged:
            out.append(None)
            continue
        final = folder / f"{name}.parquet"
        tmp = folder / f".{name}.parquet.{uuid.uuid4().hex}.tmp"
        try:
            path_sql = str(tmp).replace("'", "''")
            con.execute(f"COPY (SELECT {_as_exported(con, view)} FROM {view}) TO '{path_sql}' (FORMAT parquet)")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        out.append(final)
    return out[0], out[1], out[2]


__all__ = ["EngineUnavailable", "MasterUnreachable", "SparkEngine", "check_java", "check_master", "check_pyspark",
           "export_canonical", "spark_session"]
