"""The Spark engine: same features as DuckDB on the same data, timestamps untouched, clear errors.

One local SparkSession serves the whole module (the JVM start is the slow part).
"""

from __future__ import annotations

import os
import stat
import sys
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.customer_features import DataProfile, FeatureSpec, customer_features, visible_events
from features.engine import connect
from features.engines.duckdb import DuckDBEngine
from features.engines.spark import EngineUnavailable, SparkEngine, check_java, check_pyspark, export_canonical, spark_session
from pipeline.config import load_config
from pipeline.jobs.data import load_validated
from conftest import REPO
from feature_rules import violations
from pipeline.synthetic import generate, write

pytestmark = pytest.mark.spark

APT_HINT = "apt-get update && apt-get install -y openjdk-17-jre-headless"
DATA_END = "2026-11-27"  # the synthetic shop's last day: events up to 2026-11-28 00:00
RUN_AS_OF = datetime(2026, 11, 28)  # validation time; the feature cutoffs below lie inside the history
# Fast local JVM for a short test run: C1 JIT only, serial GC, few partitions.
TEST_CONF = {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
    "spark.sql.shuffle.partitions": "2",
}


# ---------------------------------------------------------------- availability (no JVM)
def test_missing_java_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no java anywhere
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineUnavailable, match="Java not found") as err:
        check_java()
    assert "Java 17" in str(err.value) and APT_HINT in str(err.value)

    from pyspark import SparkContext

    if SparkContext._gateway is None:  # no JVM yet: spark_session must stop at the check, not in Py4J
        with pytest.raises(EngineUnavailable, match="Java not found"):
            spark_session()


def test_old_java_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "java"
    fake.write_text('#!/bin/sh\necho \'java version "1.8.0_392"\' >&2\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(EngineUnavailable, match="found Java 8") as err:
        check_java()
    assert APT_HINT in str(err.value)


def test_missing_pyspark_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    with pytest.raises(EngineUnavailable, match="make env-spark"):
        check_pyspark()


def test_spark_that_cannot_start_is_one_paragraph_not_a_stack(project, tmp_path):
    """A JVM that refuses a setting (`spark.driver.memory 12qq` in spark-defaults.conf) ended in 60
    lines of Python stack; a SPARK_HOME without Spark in an error about output paths."""
    import subprocess

    write(generate(60, seed=6, end=DATA_END), project.workspace / "data")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "spark-defaults.conf").write_text("spark.driver.memory 12qq\n")
    dynseg = [sys.executable, "-m", "pipeline.cli", "features", "build", "--engine", "spark", "--as-of", DATA_END,
              "--out", str(tmp_path / "f.parquet")]
    env = {**os.environ, "DYNSEG_PROJECT": str(project.root), "SPARK_CONF_DIR": str(tmp_path / "conf")}
    env.pop("SPARK_HOME", None)
    r = subprocess.run(dynseg, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    assert r.returncode == 1, r.stderr
    said = " ".join(r.stderr.split())
    assert "Spark failed: its JVM exited as it started" in said and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "f.parquet").exists()
    env = {**env, "SPARK_HOME": str(tmp_path / "nospark")}
    del env["SPARK_CONF_DIR"]
    r = subprocess.run(dynseg, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
    said = " ".join(r.stderr.split())
    assert r.returncode == 1 and f"the environment variable SPARK_HOME is '{tmp_path / 'nospark'}', which holds no " \
        "bin/spark-submit" in said and "Traceback" not in r.stderr, r.stderr


def test_a_spark_build_prints_no_warnings_of_its_own(project, tmp_path):
    """Only the JVM's own line is left around a Spark run, as the README says: SparkConf warned on
    every run that a cluster manager would override spark.local.dir (set for the scratch folder)."""
    import subprocess

    write(generate(60, seed=6, end=DATA_END), project.workspace / "data")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "features", "build", "--engine", "spark", "--as-of",
                        DATA_END, "--out", str(tmp_path / "f.parquet")], env={**os.environ, "DYNSEG_PROJECT": str(project.root)},
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    noise = [line for line in r.stderr.splitlines() if " WARN " in line or " ERROR " in line]
    assert not noise, noise


def test_a_bad_spark_conf_value_is_named_by_spark_s_own_cause(project, tmp_path):
    """A bad value in spark.conf read "Spark failed: Error while instantiating
    'org.apache.spark.sql.internal.SessionStateBuilder':" and nothing of the value at fault, which
    the exception's cause names."""
    import subprocess

    write(generate(60, seed=6, end=DATA_END), project.workspace / "data")
    (project.root / "configs" / "local").mkdir(exist_ok=True)
    (project.root / "configs" / "local" / "project.yaml").write_text(
        "spark: {conf: {spark.sql.shuffle.partitions: abc}}\n")
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "features", "build", "--engine", "spark", "--as-of",
                        DATA_END, "--out", str(tmp_path / "f.parquet")], env={**os.environ, "DYNSEG_PROJECT": str(project.root)},
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    said = " ".join(r.stderr.split())
    assert r.returncode == 1 and "Spark failed:" in said and "spark.sql.shuffle.partitions" in said, said
    assert "Traceback" not in r.stderr
    # the file that set it is named (it listed every file spark: may come from)
    assert "Its settings come from spark: in configs/project.yaml and configs/local/project.yaml, over " \
           "spark-defaults.conf" in said, said


def test_master_addresses_are_read_from_the_url():
    from features.engines.spark import master_addresses

    assert master_addresses("spark://head:7077") == [("head", 7077)]
    assert master_addresses("spark://a:7078,b") == [("a", 7078), ("b", 7077)]  # standalone HA, default port
    assert master_addresses("spark://[::1]:7079") == [("::1", 7079)]
    assert master_addresses("k8s://https://api.example:6443") == [("api.example", 6443)]
    assert master_addresses("k8s://api.example") == [("api.example", 443)]
    assert master_addresses("local[2]") == master_addresses("yarn") == []


def test_yarn_without_its_configuration_folder_is_one_line_before_any_jvm(monkeypatch):
    """master: yarn without HADOOP_CONF_DIR failed after the JVM started, with a Java stack and a
    summary blaming "a setting Java refuses"."""
    from features.engines.spark import MasterUnreachable, check_master

    for var in ("HADOOP_CONF_DIR", "YARN_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(MasterUnreachable, match=r"spark.master is yarn \(configs/profiles/yarn.yaml\), and neither "
                                                r"HADOOP_CONF_DIR nor YARN_CONF_DIR is set") as e:
        check_master("yarn", "configs/profiles/yarn.yaml")
    assert not e.value.try_later  # a setting to fix, not a cluster to wait for
    monkeypatch.setenv("HADOOP_CONF_DIR", "/etc/hadoop/conf")
    check_master("yarn", "configs/profiles/yarn.yaml")  # (no address to try: Spark's to find)


def test_an_unreachable_master_is_one_line_at_once_not_a_minute_of_retries(project, tmp_path):
    """A cluster's master that was down (or a wrong port) took Spark about 60 s of registration
    retries and ~115 log lines, then "Spark failed: Cannot call methods on a stopped SparkContext",
    naming neither the address nor the setting. Now one line before any JVM starts: the address,
    why, and the file that sets it; exit 75 (try later) for a master that does not answer, 1 for a
    host name that does not resolve (a setting to fix)."""
    import socket
    import subprocess

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write(generate(60, seed=6, end=DATA_END), project.workspace / "data")
    (project.root / "configs" / "local").mkdir(exist_ok=True)
    dynseg = [sys.executable, "-m", "pipeline.cli", "features", "build", "--engine", "spark", "--as-of", DATA_END,
              "--out", str(tmp_path / "f.parquet")]
    env = {**os.environ, "DYNSEG_PROJECT": str(project.root)}
    (project.root / "shared").mkdir(exist_ok=True)  # (a shared mount is there; dynseg does not make one)
    for master, code, why in ((f"spark://127.0.0.1:{port}", 75, f"127.0.0.1:{port}: connection refused"),
                              ("spark://no-such-host.invalid:7077", 1, "the name 'no-such-host.invalid' does not resolve")):
        (project.root / "configs" / "local" / "project.yaml").write_text(
            f"spark: {{master: '{master}', staging_dir: shared}}\n")
        r = subprocess.run(dynseg, env=env, capture_output=True, text=True, timeout=180, cwd=REPO)
        said = " ".join(r.stderr.split())
        assert r.returncode == code, r.stderr
        assert f"the Spark master '{master}' (spark.master in configs/local/project.yaml) cannot be reached" in said, said
        assert why in said and "Traceback" not in r.stderr and "SparkContext" not in r.stderr, r.stderr
        assert not (tmp_path / "f.parquet").exists() and not any((project.root / "shared").glob("*/*"))


# ---------------------------------------------------------------- on Spark
@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]", TEST_CONF)
    yield session
    session.stop()


def test_session_settings(spark):
    conf = spark.conf
    assert conf.get("spark.sql.session.timeZone") == "UTC"
    assert conf.get("spark.driver.host") == "127.0.0.1" and conf.get("spark.ui.enabled") == "false"
    assert "dynseg-spark-" in conf.get("spark.sql.warehouse.dir")  # a temp dir, not ./spark-warehouse
    # shuffle files and the JVM's temp folders in that scratch folder too, swept with it after a kill
    # (they went to /tmp/blockmgr-* and /tmp/spark-*, left for good by a killed run)
    scratch = os.path.dirname(conf.get("spark.local.dir"))
    assert "dynseg-spark-" in scratch and conf.get("spark.sql.warehouse.dir").endswith(f"{scratch}/warehouse")
    assert f"-Djava.io.tmpdir={scratch}" in conf.get("spark.driver.extraJavaOptions")
    spark.sql("SELECT id % 7 AS k, count(*) FROM range(1000) GROUP BY 1").collect()  # a shuffle
    import glob

    assert glob.glob(f"{scratch}/local/blockmgr-*"), os.listdir(scratch)


def test_a_library_cannot_take_the_held_signal_over():
    """pyspark's SparkContext sets its own SIGINT handler as it starts, inside the hold: a Ctrl-C
    then called the JVM mid-call, and was lost (the run went on and replaced the output)."""
    import signal

    from features.writers import signals_held

    # Python's own Ctrl-C handler, as in a command (a test worker may ignore SIGINT)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        theirs = []
        with pytest.raises(KeyboardInterrupt):
            with signals_held():
                signal.signal(signal.SIGINT, lambda *a: theirs.append(a))  # as pyspark does
                signal.raise_signal(signal.SIGINT)  # held: acted on after the block
                reached = True
        assert reached and theirs == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, outer)


TRICKY_TS = [
    "1000-01-01 12:00:00",  # Julian/Gregorian hybrid era: must not be rebased
    "1582-10-10 00:00:00",  # in the ten days the Julian calendar skipped
    "1900-01-01 00:00:00.5",  # before the epoch, fractional
    "1970-01-01 00:00:00",
    "2026-03-29 01:30:00.123455",  # a wall-clock time that does not exist in Europe (DST gap)
    "2026-03-29 01:30:00.123456",  # the cutoff T below
    "2026-03-29 01:30:00.123457",
    "2026-10-25 01:30:00",  # ambiguous in Europe (DST end)
    "2262-04-12 00:00:00",  # beyond pandas' nanosecond range
    "9999-12-31 23:59:59.999999",  # a "never" sentinel
    None,
]


def test_timestamps_round_trip_unchanged(spark, tmp_path):
    """Naive TIMESTAMPs written by DuckDB come back from Spark as the same wall-clock values."""
    con = connect()
    rows = ", ".join(f"({i}, {'NULL' if v is None else repr(v)}::TIMESTAMP)" for i, v in enumerate(TRICKY_TS))
    con.execute(f"CREATE TEMP VIEW events AS SELECT * FROM (VALUES {rows}) t(i, ts)")
    con.execute("CREATE TEMP VIEW customers AS SELECT i AS customer_id, ts AS signup_at FROM events")
    ev_path, cu_path, consents = export_canonical(con, tmp_path / "canonical")
    assert consents is None  # no merged profiles
    assert sorted(p.name for p in (tmp_path / "canonical").iterdir()) == ["customers.parquet", "events.parquet"]
    assert type(spark.read.parquet(str(ev_path)).schema["ts"].dataType).__name__ == "TimestampNTZType"

    duck, engine = DuckDBEngine(con), SparkEngine(spark, ev_path, cu_path)
    try:
        expected = duck.execute(duck.events().order_by("i"))
        got = engine.execute(engine.events().order_by("i"))
        pd.testing.assert_frame_equal(got, expected)
        assert got["ts"].dtype == "datetime64[us]"
        assert str(got["ts"][4]) == "2026-03-29 01:30:00.123455" and pd.isna(got["ts"].iloc[-1])

        cutoff = datetime(2026, 3, 29, 1, 30, 0, 123456)  # strictly before T, to the microsecond
        seen = sorted(engine.execute(visible_events(engine.events(), cutoff))["i"])
        assert seen == sorted(duck.execute(visible_events(duck.events(), cutoff))["i"]) == [0, 1, 2, 3, 4]
    finally:
        engine.close()
        con.close()


def assert_same_features(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows, columns and dtypes; counts, flags and labels exact; floats to rtol 1e-9 / atol 1e-9."""
    assert list(got.columns) == list(expected.columns)
    assert not expected["customer_id"].duplicated().any() and not got["customer_id"].duplicated().any()
    assert set(got["customer_id"]) == set(expected["customer_id"])
    pd.testing.assert_series_equal(got.dtypes, expected.dtypes)
    got = got.sort_values("customer_id", ignore_index=True)
    expected = expected.sort_values("customer_id", ignore_index=True)
    problems = []
    for col in expected.columns:
        a, b = got[col], expected[col]
        if pd.api.types.is_float_dtype(b):
            x, y = a.to_numpy(float), b.to_numpy(float)
            bad = ~np.isclose(x, y, rtol=1e-9, atol=1e-9, equal_nan=True)
            if bad.any():
                nulls = (np.isnan(x) != np.isnan(y)).sum()
                problems.append(f"{col}: {bad.sum()} rows differ ({nulls} null in one engine only), "
                                f"max |diff| {np.nanmax(np.abs(x - y))}")
        else:
            same = (a.isna() & b.isna()) | (a == b).fillna(False).astype(bool)
            if not same.all():
                i = np.flatnonzero(~same.to_numpy())[:3]
                problems.append(f"{col}: {(~same).sum()} rows differ, e.g. spark {a.iloc[i].tolist()} vs duckdb {b.iloc[i].tolist()}")
    assert not problems, "Spark and DuckDB disagree:\n" + "\n".join(problems)


def _validated_shop(project):
    """A generated 300-customer shop, validated, and the profile of what it offers."""
    write(generate(300, seed=5, end=DATA_END), project.workspace / "data")
    data = load_validated(load_config(project.root), RUN_AS_OF)
    roles = frozenset(r for (r,) in data.con.execute("SELECT DISTINCT role FROM events").fetchall())
    return data, DataProfile(roles=roles, has_signup=True, has_consent_profile=True, categorical=("country", "plan"))


@pytest.mark.parametrize(
    "as_of",
    [datetime(2026, 6, 1), datetime(2026, 3, 14, 13, 27, 41, 250_000)],
    ids=["date-end", "mid-day"],
)
def test_customer_features_match_duckdb(spark, project, as_of):
    data, profile = _validated_shop(project)
    spec = FeatureSpec()
    (latest,) = data.con.execute("SELECT max(ts) FROM events").fetchone()
    assert latest > as_of  # later events exist: the point-in-time filter is exercised on both engines

    duck = DuckDBEngine(data.con)
    assert duck.consents() is not None  # profiles were merged: consent comes from their decisions
    expected = duck.execute(customer_features(duck.events(), duck.customers(), as_of, spec, profile,
                                              consents=duck.consents()))
    engine = SparkEngine(spark, *export_canonical(data.con, project.workspace / "spark"))
    try:
        got = engine.execute(customer_features(engine.events(), engine.customers(), as_of, spec, profile,
                                               consents=engine.consents()))
    finally:
        engine.close()
        data.con.close()

    assert len(expected) > 100 and (expected["as_of"] == as_of).all()
    assert_same_features(got, expected)
    assert violations(got, as_of, spec) == []  # the feature set's own rules, on Spark's frame


def test_sub_second_timestamps_give_the_same_days_on_both_engines(spark, tmp_path):
    """Days between instants count microseconds on both engines: Spark's epoch seconds (what Ibis
    compiled to before) are whole, so an event a microsecond before T read 1 s on Spark."""
    from test_parity import _tiny

    events, customers = _tiny(
        [("a", "purchase", "2026-05-31 23:59:59.999999", 5.0, None), ("a", "purchase", "2026-05-29 12:00:00.25", 7.0, None),
         ("b", "email_open", "2026-05-31 23:59:59.5", None, None)],
        [("a", "2025-01-01", None, None), ("b", "2025-12-31 23:59:59.75", None, None)])
    # typed attributes listed as categorical: text on both engines; a CSV file's boolean text
    # (`optin`) spelled as the typed boolean is
    customers = customers.assign(kids=pd.array([2, None], dtype="Int64"), vip=pd.array([True, False], dtype="boolean"),
                                 optin=["Yes", " F "])
    profile = DataProfile(roles=frozenset(events["role"]), has_signup=True, categorical=("kids", "vip", "optin"),
                          boolean_text=("optin",))
    as_of = datetime(2026, 6, 1)
    got, expected = _on_both_engines(spark, tmp_path, events, customers, as_of, FeatureSpec(), profile)
    day_us = 86_400_000_000
    rows = expected.set_index("customer_id")
    assert rows.loc["a", "recency_days"] == pytest.approx(1 / day_us, rel=1e-9, abs=0)
    assert rows.loc["b", "days_since_last_open"] == pytest.approx(500_000 / day_us, rel=1e-9, abs=0)
    assert rows.kids.iloc[0] == "2" and pd.isna(rows.kids.iloc[1]) and rows.vip.tolist() == ["true", "false"]
    assert rows.optin.tolist() == ["true", "false"]
    assert rows.loc["a", "mean_gap_days"] == pytest.approx((2.5 * day_us - 250_001) / day_us, rel=1e-12, abs=0)
    assert_same_features(got, expected)
    days = ["recency_days", "days_since_last_open", "mean_gap_days", "days_since_signup"]  # (atol 1e-4 above hid 1 s)
    np.testing.assert_allclose(got.set_index("customer_id")[days].sort_index().to_numpy(dtype=float),
                               rows[days].sort_index().to_numpy(dtype=float), rtol=1e-9, atol=0)


def _on_both_engines(spark, tmp_path, events, customers, as_of, spec, profile):
    """Spark's and DuckDB's customer_features of small frames (``test_parity._tiny``)."""
    from test_parity import _tiny_engine

    duck = _tiny_engine(events, customers)
    expected = duck.execute(customer_features(duck.events(), duck.customers(), as_of, spec, profile))
    engine = SparkEngine(spark, *export_canonical(duck.con, tmp_path / "canonical"))
    try:
        return engine.execute(customer_features(engine.events(), engine.customers(), as_of, spec, profile)), expected
    finally:
        engine.close()
        duck.con.close()


def test_a_log_without_sends_matches_duckdb(spark, tmp_path):
    """Opens and clicks without sends, and a role no feature reads (a mapped ``login``): the same
    columns and values on both engines (the query failed on both before 2026-12-01)."""
    from test_parity import _tiny

    events, customers = _tiny(
        [("a", "email_open", "2026-05-20 10:00", None, None), ("a", "email_click", "2026-05-20 10:05", None, None),
         ("a", "login", "2026-05-30", None, None), ("b", "email_open", "2026-01-02", None, None),
         ("b", "purchase", "2026-03-01", 12.5, None), ("c", "login", "2026-06-02", None, None)],
        [("a", "2025-01-01", None, None), ("b", "2025-02-01", None, None)])
    profile = DataProfile(roles=frozenset(events["role"]), has_signup=True)
    spec, as_of = FeatureSpec(window_roles=("email_open", "login")), datetime(2026, 6, 1)
    got, expected = _on_both_engines(spark, tmp_path, events, customers, as_of, spec, profile)
    assert "n_email_send" not in expected and "open_rate" not in expected  # no sends: no send count, no rate
    assert expected.set_index("customer_id")[["n_email_open", "n_email_click", "n_login_30d"]].to_dict("index") == {
        "a": {"n_email_open": 1, "n_email_click": 1, "n_login_30d": 1},
        "b": {"n_email_open": 1, "n_email_click": 0, "n_login_30d": 0}}
    assert_same_features(got, expected)


def test_categories_spelt_in_greek_or_turkish_capitals_are_one_on_both_engines(spark, tmp_path):
    """Java lower-cases a final capital sigma to ς and İ to i + a combining dot, DuckDB to σ and i:
    ΟΔΟΣ beside οδοσ and İNDİRİM beside indirim were one category on DuckDB and two on Spark."""
    from test_parity import _tiny

    events, customers = _tiny([("a", "purchase", "2026-05-20", 5.0, "ΟΔΟΣ"), ("a", "purchase", "2026-05-21", 5.0, "οδοσ"),
                               ("b", "purchase", "2026-05-20", 5.0, "İNDİRİM"), ("b", "purchase", "2026-05-21", 5.0, "indirim")],
                              [("a", "2025-01-01", None, None), ("b", "2025-01-01", None, None)])
    profile = DataProfile(roles=frozenset(events["role"]), has_signup=True)
    got, expected = _on_both_engines(spark, tmp_path, events, customers, datetime(2026, 6, 1), FeatureSpec(), profile)
    assert expected.set_index("customer_id")["n_categories"].to_dict() == {"a": 1, "b": 1}
    assert_same_features(got, expected)


def test_listed_attributes_of_any_type_read_the_same_text_on_both_engines(spark, tmp_path):
    """A listed number or zoned time becomes a category as text; Spark spelled 1e-07 as 1.0E-7 and
    123456789.0 as 1.23456789E8, and dropped a time's zone, so a model trained on DuckDB's
    features met unseen categories in Spark's."""
    from test_parity import _tiny

    events, customers = _tiny([(c, "purchase", "2026-05-20 10:00", 5.0, None) for c in "abc"],
                              [(c, "2025-01-01", None, None) for c in "abc"])
    customers["score"] = [1e-07, 1e20, 123456789.0]
    customers["tier"] = pd.array([1, 2, None], dtype="Int64")
    customers["vip"] = pd.array([True, False, None], dtype="boolean")
    customers["seen"] = pd.to_datetime(["2026-01-01 03:00", "2026-02-01 00:00", None]).tz_localize("UTC")
    profile = DataProfile(roles=frozenset(events["role"]), has_signup=True, categorical=("score", "tier", "vip", "seen"))
    spec, as_of = FeatureSpec(), datetime(2026, 6, 1)
    got, expected = _on_both_engines(spark, tmp_path, events, customers, as_of, spec, profile)
    assert expected.set_index("customer_id")["score"].to_dict() == {"a": "1e-07", "b": "1e+20", "c": "123456789.0"}
    assert expected.set_index("customer_id")["vip"].to_dict()["a"] == "true"
    assert_same_features(got, expected)


def test_logs_with_some_roles_match_duckdb(spark, tmp_path):
    """Seven of the parity test's 44 role mixes (every seventh: single roles and random mixes with
    their windows and profiles) give the same frame on Spark as on DuckDB. All 44 agreed when
    run once; seven keep the suite short."""
    from test_parity import MIX_AS_OF, _mixes, _tiny_engine, mix_data

    for k, (roles, spec, has_signup, has_consent) in enumerate(_mixes()[::7]):
        events, customers, profile = mix_data(roles, has_signup, has_consent)
        duck = _tiny_engine(events, customers)
        expected = duck.execute(customer_features(duck.events(), duck.customers(), MIX_AS_OF, spec, profile))
        engine = SparkEngine(spark, *export_canonical(duck.con, tmp_path / f"mix{k}"))
        try:
            got = engine.execute(customer_features(engine.events(), engine.customers(), MIX_AS_OF, spec, profile))
        finally:
            engine.close()
            duck.con.close()
        assert_same_features(got, expected)


def test_runs_on_one_workspace_read_their_own_export(spark, project):
    """Spark reads its input lazily, long after the export: a second run on the same workspace,
    over data that changed meanwhile, must not replace the first run's files. Each run exports to
    a folder of its own, removed when its engine closes."""
    from pipeline.jobs.features import open_engine

    write(generate(300, seed=5, end=DATA_END), project.workspace / "data")
    cfg = load_config(project.root)
    first_data = load_validated(cfg, RUN_AS_OF)
    first = open_engine(cfg, first_data, "spark")
    count = "SELECT count(*) FROM customers"
    expected = [first_data.con.execute(count).fetchone()[0]]  # read now: the views read the files lazily too
    write(generate(120, seed=6, end=DATA_END), project.workspace / "data")
    second_data = load_validated(cfg, RUN_AS_OF)
    second = open_engine(cfg, second_data, "spark")
    expected.append(second_data.con.execute(count).fetchone()[0])
    try:
        assert first._owned != second._owned and first._owned.parent == project.workspace / "staging"
        counts = [len(e.execute(e.customers())) for e in (first, second)]
        assert counts == expected and expected[0] > expected[1]
    finally:
        for e, d in ((first, first_data), (second, second_data)):
            e.close()
            d.con.close()
    assert not any((project.workspace / "staging").iterdir())


INTERRUPT_SCRIPT = """
import os, signal, sys, threading, time, types
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI runs where SIGINT is ignored)
from features.engines.spark import SparkEngine, spark_session
spark = spark_session("local[2]", {"spark.sql.shuffle.partitions": "2"})
def fire():
    while not spark.sparkContext.statusTracker().getActiveJobsIds():
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=fire, daemon=True).start()
engine = types.SimpleNamespace(session=spark)
try:
    with SparkEngine.stopped_by_signals(engine):  # a scoring run's guard, around its queries' own
        with SparkEngine.stopped_by_signals(engine):
            spark.range(0, 10**12, numPartitions=64).selectExpr("id % 1000 AS k").groupBy("k").count().toArrow()
    print("FINISHED")
except KeyboardInterrupt:
    time.sleep(1.0)
    print("INTERRUPTED", list(spark.sparkContext.statusTracker().getActiveJobsIds()), signal.getsignal(signal.SIGINT) is signal.default_int_handler)
"""


def test_ctrl_c_during_a_spark_query_cancels_it_and_stops(tmp_path):
    """A SIGINT while `toArrow` ran hung the command for good (pyspark waited in a `finally` for a
    JVM thread that waited for the reader that had gone), or failed as "Spark failed: Error while
    sending or receiving". Now the jobs are cancelled and the interrupt raised once the call
    returns; nothing is left running."""
    import subprocess

    r = subprocess.run([sys.executable, "-c", INTERRUPT_SCRIPT], capture_output=True, text=True, timeout=240,
                       cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.stdout.strip() == "INTERRUPTED [] True", (r.stdout, r.stderr[-3000:])  # the handler given back
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


def test_spark_settings_set_the_session_and_where_runs_stage(spark, project):
    """`spark:` in project.yaml (or a profile): master, conf and staging_dir. The engine could run
    only on local[2], with no way to name a cluster; a staging folder whose name has glob
    characters (`shared [1]`) was read by Hadoop as a pattern matching nothing."""
    from pipeline.jobs.features import open_engine, staging_root

    (project.root / "configs" / "local").mkdir(exist_ok=True)
    (project.root / "configs" / "local" / "project.yaml").write_text(
        "spark:\n  master: local[2]\n  staging_dir: shared [1]/staging\n"
        "  conf: {spark.sql.shuffle.partitions: 3, spark.sql.adaptive.enabled: true}\n")
    write(generate(120, seed=6, end=DATA_END), project.workspace / "data")
    cfg = load_config(project.root)
    # a staging folder that is not there is refused, not made: a typo, or a share not mounted here,
    # became a folder on this machine that no executor sees (a file in its place is refused too)
    with pytest.raises(ValueError, match=r"spark.staging_dir .*shared \[1\]/staging \(configs/local/project.yaml\) does "
                                         r"not exist; dynseg does not create it"):
        staging_root(cfg)
    assert not (project.root / "shared [1]").exists()
    (project.root / "shared [1]").mkdir()
    (project.root / "shared [1]" / "staging").write_text("")
    with pytest.raises(ValueError, match=r"\(configs/local/project.yaml\) is a file; expected a folder"):
        staging_root(cfg)
    (project.root / "shared [1]" / "staging").unlink()
    (project.root / "shared [1]" / "staging").mkdir()
    data = load_validated(cfg, RUN_AS_OF)
    engine = open_engine(cfg, data, "spark")
    try:
        assert engine._owned.parent == project.root / "shared [1]" / "staging"
        assert len(engine.execute(engine.customers())) == data.con.execute("SELECT count(*) FROM customers").fetchone()[0]
        assert spark.conf.get("spark.sql.shuffle.partitions") == "3" and spark.conf.get("spark.sql.adaptive.enabled") == "true"
    finally:
        engine.close()
        data.con.close()
        spark.conf.set("spark.sql.shuffle.partitions", TEST_CONF["spark.sql.shuffle.partitions"])
    assert not any((project.root / "shared [1]" / "staging").iterdir())
    (project.root / "configs" / "local" / "project.yaml").write_text("spark: {master: 'spark://head:7077'}\n")
    with pytest.raises(ValueError, match=r"spark.master is 'spark://head:7077' \(a cluster\), and spark.staging_dir is not "
                                         r"set \(configs/local/project.yaml\)"):
        staging_root(load_config(project.root))


def test_features_build_on_spark_writes_what_duckdb_writes(spark, project):
    """`dynseg features build --engine spark`: the job's pandas path (Spark returns pandas) gives the
    file the DuckDB path (Arrow, sorted in Arrow) gives, row for row, and the same printed summary."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    write(generate(300, seed=5, end=DATA_END), project.workspace / "data")
    files, outputs = {}, {}
    for engine in ("duckdb", "spark"):
        files[engine] = project.root / f"f_{engine}.csv"
        result = CliRunner().invoke(app, ["features", "build", "--as-of", "2026-06-01", "--engine", engine,
                                          "--out", str(files[engine])])
        assert result.exit_code == 0, result.output
        outputs[engine] = result.stdout
    duck, got = (pd.read_csv(files[e]) for e in ("duckdb", "spark"))
    assert len(duck) > 100 and duck.customer_id.is_monotonic_increasing
    assert got.customer_id.tolist() == duck.customer_id.tolist()
    assert_same_features(got, duck)
    summary = [line for line in outputs["duckdb"].splitlines() if "frequency" in line or "recency_days" in line]
    assert summary and all(line in outputs["spark"] for line in summary)
    # Parquet from both engines: one schema (Spark's path goes through pandas), readable as one dataset
    import pyarrow.parquet as pq

    for engine in ("duckdb", "spark"):
        result = CliRunner().invoke(app, ["features", "build", "--as-of", "2026-06-01", "--engine", engine,
                                          "--out", str(project.root / "both" / f"{engine}.parquet")])
        assert result.exit_code == 0, result.output
    schemas = [pq.read_schema(project.root / "both" / f"{e}.parquet") for e in ("duckdb", "spark")]
    assert schemas[0].equals(schemas[1], check_metadata=False) and schemas[1].metadata is None, schemas
    assert len(pq.read_table(project.root / "both")) == 2 * len(duck)


def test_a_new_spark_session_logs_warnings_without_the_startup_noise(tmp_path):
    """A fresh JVM (a subprocess: this one's may be running already) logs through dynseg's log4j2
    settings: no banner about Spark's default profile, no native-Hadoop or plan-truncation warning,
    while a warning of a logger that is not silenced still reaches stderr."""
    import subprocess

    code = """
import pyspark.sql.functions as F
from features.engines.spark import spark_session
s = spark_session()
df = s.range(3)
for i in range(120):
    df = df.withColumn(f"c{i}", F.lit(i))
df.explain(mode="cost")  # a plan wider than Spark prints: the plan-truncation warning
s._jvm.org.apache.log4j.LogManager.getLogger("dynseg.test").warn("still-warns")
print(df.count())
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("3")
    for noise in ("Using Spark's default log4j profile", "Setting default log level", "NativeCodeLoader",
                  "Truncated the string representation"):
        assert noise not in r.stderr, r.stderr
    assert "WARN test: still-warns" in r.stderr


def test_training_sets_and_label_rates_match_duckdb(spark, project):
    """Labels and stacked snapshots are the same definitions on both engines: a churn training set
    (features, label, snapshot role; churn's population is the active customers, the purchase
    label's is everybody known) and the one-scan label rates of both targets that a scoring run
    reports, on Spark and on DuckDB, from one validated log."""
    from datetime import timedelta

    from features.labels import LabelSpec
    from features.training_set import build_training_set, label_rates, plan_snapshots

    data, profile = _validated_shop(project)
    (data_start,) = data.con.execute("SELECT min(ts) FROM events").fetchone()
    # a mid-day end: the cutoffs fall at midnight, the label windows end mid-way through a day
    plan = plan_snapshots(data_start, datetime(2026, 10, 17, 15, 30), timedelta(days=30), 3, timedelta(days=30))
    specs = [LabelSpec("purchase", timedelta(days=30)),
             LabelSpec("churn", timedelta(days=30), population="active", active_window=timedelta(days=120))]
    requests = [(s, c) for s in specs for c in plan.cutoffs]
    duck = DuckDBEngine(data.con)
    engine = SparkEngine(spark, *export_canonical(data.con, project.workspace / "spark"))
    try:
        for spec in specs[1:]:  # churn only, to keep the test short; the label rates cover both targets
            expected = build_training_set(duck, FeatureSpec(), profile, spec, plan, min_class_examples=5)
            got = build_training_set(engine, FeatureSpec(), profile, spec, plan, min_class_examples=5)
            assert set(expected.snapshot) == {"test", "valid", "train"} and 0 < expected.label.mean() < 1
            assert got[["as_of", "customer_id", "snapshot", "label"]].equals(
                expected[["as_of", "customer_id", "snapshot", "label"]]), spec.target
            for cutoff in plan.cutoffs:  # one row per customer per snapshot
                assert_same_features(got[got.as_of == cutoff].reset_index(drop=True),
                                     expected[expected.as_of == cutoff].reset_index(drop=True))
        rates = {name: label_rates(e, profile, requests, data_start, timedelta(days=90)) for name, e in
                 (("duckdb", duck), ("spark", engine))}
    finally:
        engine.close()
        data.con.close()
    assert rates["spark"] == rates["duckdb"] and all(r is not None and 0 < r < 1 for r in rates["duckdb"]), rates
