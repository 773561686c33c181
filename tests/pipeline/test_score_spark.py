"""`dynseg score` on Spark equals the DuckDB path: the same shop, the same model versions, the same
customer scores, bands, memberships, segment health and export files.

One local SparkSession serves the module (the JVM start is the slow part). Both runs score the same
as_of in one workspace: the Spark run replaces the DuckDB one, so the DuckDB outputs are read first.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import Project, generated_shop, trained_champions
from features.asof import parse_as_of
from pipeline import runs
from pipeline.cli import app
from pipeline.config import load_config
from pipeline.jobs.score import score_job

pytestmark = [pytest.mark.spark, pytest.mark.slow]
AS_OF = parse_as_of("2026-11-27")
# Fast local JVM for a short run: C1 JIT only, serial GC (as in tests/features/test_spark_engine.py).
TEST_CONF = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
KEYS = {"customer_scores": ["customer_id"], "segment_members": ["segment", "customer_id"],
        "segment_health": ["segment"], "segment_exclusions": ["segment", "customer_id"]}  # table -> sort order


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """2,000 generated customers; both models trained (fewer snapshots: same code path) and promoted."""
    with generated_shop(tmp_path_factory.mktemp("score_spark"), 2000, seed=21) as p:
        cfg = trained_champions(p)
        yield p


@pytest.fixture(scope="module")
def outputs(shop):
    """Per engine, what its run left: the ScoreRun, its rows in the workspace tables, its export files."""
    from features.engines.spark import spark_session

    session = spark_session("local[2]", TEST_CONF)
    cfg = load_config(shop.root)
    try:
        out = {}
        for engine in ("duckdb", "spark"):
            run = score_job(cfg, AS_OF, engine)
            manifest = json.loads((run.export_dir / "manifest.json").read_text())
            out[engine] = {
                "run": run, "manifest": manifest,
                **{t: q(shop, f"SELECT * EXCLUDE (run_id) FROM {t} WHERE run_id = ?", [run.run_id])
                   .sort_values(key, ignore_index=True) for t, key in KEYS.items()},
                "files": {f: read_export(run.export_dir / f) for f in manifest["files"]},
            }
        yield out
    finally:
        session.stop()


def q(shop: Project, sql: str, params=None) -> pd.DataFrame:
    return runs.read(shop.workspace / "dynseg.duckdb", sql, params)


def read_export(path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def assert_same(a: pd.DataFrame, b: pd.DataFrame, atol: float) -> None:
    """Same columns and rows in the same order; floats within ``atol``, everything else exactly."""
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for c in a.columns:
        if pd.api.types.is_float_dtype(a[c]):
            assert a[c].isna().equals(b[c].isna()), c
            assert ((a[c] - b[c]).abs() <= atol).sum() == a[c].notna().sum(), c
        else:
            assert a[c].astype(object).where(a[c].notna(), None).tolist() == \
                   b[c].astype(object).where(b[c].notna(), None).tolist(), c


def test_missing_java_is_one_clear_line(shop, tmp_path, monkeypatch):
    """Before a JVM is up, a machine without Java gets check_java's message, not a stack trace."""
    from pyspark import SparkContext

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty dir: no java anywhere
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(SparkContext, "_gateway", None)  # as in a fresh process, even if a JVM runs here
    result = CliRunner().invoke(app, ["score", "--as-of", "2026-11-27", "--engine", "spark"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Java not found" in result.output and "openjdk-17-jre-headless" in result.output
    assert "Traceback" not in result.output
    assert q(shop, "SELECT * FROM scoring_runs").empty


def test_same_models_bands_and_base_rates(outputs):
    duck, spark = outputs["duckdb"]["run"], outputs["spark"]["run"]
    assert spark.n_customers == duck.n_customers
    for d, s in zip(duck.models, spark.models, strict=True):
        same = ("target", "name", "version", "model_run_id", "population", "scored")
        assert [getattr(s, a) for a in same] == [getattr(d, a) for a in same]
        assert s.base_rate == pytest.approx(d.base_rate, abs=1e-12) and s.base_rate_note == d.base_rate_note
        assert s.bands == d.bands  # percentile thresholds resolved to the same score
    # the Spark run, made second for the same as_of, replaced the DuckDB one and says so; else the same
    replaced = f"this run replaces run {duck.run_id}, scored before for the same as_of"
    assert [w for w in spark.warnings if not w.startswith(replaced)] == duck.warnings
    assert any(w.startswith(replaced) for w in spark.warnings), spark.warnings


def test_same_customer_scores(outputs):
    duck, spark = outputs["duckdb"]["customer_scores"], outputs["spark"]["customer_scores"]
    assert len(spark) == outputs["spark"]["run"].n_customers and spark.customer_id.is_unique
    assert spark.churn_score.isna().any() and spark.churn_score.notna().any()  # churn: active customers only
    assert_same(duck, spark, atol=1e-9)  # ids, bands and score_100 exactly


def test_same_memberships_and_health(outputs):
    duck, spark = outputs["duckdb"], outputs["spark"]
    assert_same(duck["segment_members"], spark["segment_members"], atol=1e-9)
    assert (spark["segment_health"]["size"] > 0).sum() >= 8
    assert_same(duck["segment_health"], spark["segment_health"], atol=1e-12)  # sizes exactly, coverage within 1e-12
    # who a rule selected but an exclusion took (what `segments changes` says of an exit)
    assert len(spark["segment_exclusions"]) and spark["segment_exclusions"].excluded_by.str.len().gt(0).all()
    assert_same(duck["segment_exclusions"], spark["segment_exclusions"], atol=0)


def test_same_export_files(outputs):
    duck, spark = outputs["duckdb"], outputs["spark"]
    assert spark["manifest"]["files"] == duck["manifest"]["files"]
    assert spark["manifest"]["rows"] == duck["manifest"]["rows"]
    for name, frame in duck["files"].items():
        assert_same(frame, spark["files"][name], atol=1e-9)
    assert sum(len(f) for f in spark["files"].values()) > 0


def test_the_run_records_its_engine_and_cleans_up(shop, outputs):
    run = outputs["spark"]["run"]
    recorded = q(shop, "SELECT engine, n_customers FROM scoring_runs WHERE run_id = ?", [run.run_id])
    assert recorded.engine[0] == "spark" and recorded.n_customers[0] == run.n_customers
    assert run.engine == "spark" and outputs["duckdb"]["run"].engine == "duckdb"  # the summary's `engine` row
    assert not list((shop.workspace / "staging").iterdir())  # the exported log and staged Parquet are gone


def test_explain_under_the_spark_profile_says_it_runs_on_duckdb(shop, outputs):
    """`explain` recomputes a run's features on DuckDB whatever the profile: said, not silent."""
    member = outputs["spark"]["customer_scores"].customer_id.iloc[0]
    result = CliRunner().invoke(app, ["--profile", "spark", "explain", member])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "explain recomputes the customer's features (the same definitions, the same values) on DuckDB in " \
           "this process, not on Spark (the profile's engine)." in said, said
    plain = " ".join(CliRunner().invoke(app, ["explain", member]).output.split())
    assert "on DuckDB in this process" not in plain


def test_models_compare_under_the_spark_profile_says_its_impact_is_on_duckdb(shop, outputs):
    """`models compare` recomputes the latest run's features on DuckDB for its impact: said, as explain does."""
    from pipeline.jobs.train import train_job

    other = train_job(load_config(shop.root), "purchase", as_of=parse_as_of("2026-10-15"), allow_unvalidated=True)
    result = CliRunner().invoke(app, ["--profile", "spark", "models", "compare", "purchase", "1", str(other.version)])
    said = " ".join(result.output.split())
    assert "the impact on the latest run recomputes its features (the same definitions, the same values) on DuckDB " \
           "in this process, not on Spark (the profile's engine)." in said, said
