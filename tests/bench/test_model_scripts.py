"""The model benchmarks (quality, calibration, explanations, scoring) run at their smallest
sizes and write their JSON."""

from __future__ import annotations

import json


def test_quality_benchmark_scores_the_model_against_every_baseline(bench, tmp_path):
    out = tmp_path / "quality.json"
    r = bench("quality.py", "--customers", "1000", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(out.read_text())
    cells = {(x["log"], x["target"], x["scorer"]) for x in found["results"]}
    assert cells == {(log, t, s) for log in ("full log", "purchases only") for t in ("purchase", "churn")
                     for s in ("model", "recency", "rfm", "bgnbd")}
    assert all(0.5 < x["roc_auc"] <= 1 for x in found["results"] if x["scorer"] == "model"), found["results"]


def test_calibration_benchmark_reports_a_slope_per_training_date(bench, tmp_path):
    out = tmp_path / "calibration.json"
    r = bench("calibration.py", "--customers", "1000", "--dates", "2026-08-31", "--targets", "purchase",
              "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(out.read_text())
    assert [(x["target"], x["as_of"]) for x in found["results"]] == [("purchase", "2026-08-31")]
    assert found["results"][0]["calibration_slope_ci_low"] <= found["results"][0]["calibration_slope"]


def test_explain_benchmark_agrees_with_lightgbm(bench, tmp_path):
    out = tmp_path / "explain.json"
    r = bench("explain.py", "--customers", "1000", "--rows", "300", "--targets", "purchase", "--repeats", "1",
              "--leaves", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.exists() and json.loads(out.read_text())


def test_scoring_benchmark_times_the_whole_command_too(bench, tmp_path):
    out = tmp_path / "scoring.json"
    r = bench("scoring.py", "--customers", "800", "--train-customers", "1000", "--data-dir", str(tmp_path / "data"),
              "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(out.read_text())
    stages = sum(found["stages_s"].values())
    # the stages leave out the champions' load and the start of Python: the whole is longer
    assert found["job_s"] > stages * 0.99 and found["command_s"] > found["job_s"], found
    assert "as `dynseg score` would take" in r.stdout
