"""The feature benchmarks (features, training set) run at their smallest sizes and write their
JSON; every script refuses a bad argument before any work."""

from __future__ import annotations

import json

import pytest


def test_features_benchmark_measures_every_variant_and_its_own_memory(bench, tmp_path):
    out = tmp_path / "results" / "features.json"
    r = bench("features.py", "--events", "30k", "--repeats", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(out.read_text())
    rows = {row["variant"]: row for row in found["results"]}
    assert set(rows) == {"dynseg", "pandas", "floor"}
    assert all(row["events"] == 30_000 for row in rows.values()), rows
    assert rows["dynseg"]["rows"] == rows["pandas"]["rows"] == 600 >= rows["floor"]["rows"] > 0, rows
    # each child's own peak (VmHWM), not the parent's carried over: the floor query on 30k events
    # needs far less than the build, and neither reports the same figure as the other
    assert 0 < rows["floor"]["peak_rss_bytes"] < rows["dynseg"]["peak_rss_bytes"], rows
    assert rows["pandas"]["pandas_over_dynseg"] > 0 and rows["dynseg"]["vs_floor"] > 0
    assert "targets at 30k events (they are set for 50M; indicative only)" in r.stdout


def test_training_set_benchmark_gets_the_same_frame_both_ways(bench, tmp_path):
    out = tmp_path / "training_set.json"
    r = bench("training_set.py", "--customers", "1200", "--snapshots", "3", "--repeats", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["customers"] == 1200 and row["rows"] > 0 and row["per_cutoff_over_once"] > 0


@pytest.mark.parametrize("script, args, says", [
    ("features.py", ["--events", "1X"], "'1X' is not a number"),
    ("features.py", ["--repeats", "0"], "expected a whole number of at least 1"),
    ("features.py", ["--events", "1k"], "at least 20k events"),
    ("quality.py", ["--customers", "abc"], "'abc' is not a number"),
    ("calibration.py", ["--dates", "2026-13-45"], "is not a date"),
    ("calibration.py", ["--targets", "foo"], "invalid choice: 'foo'"),
    ("training_set.py", ["--snapshots", "2"], "at least 3"),
    ("scoring.py", ["--customers", "-5"], "expected a whole number of at least 1"),
])
def test_a_bad_argument_is_a_usage_line_before_any_work(bench, script, args, says):
    r = bench(script, *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


def test_an_unwritable_out_is_refused_before_measuring(bench, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = bench("features.py", "--events", "30k", "--out", str(blocker / "x.json"))
    assert r.returncode == 2 and "--out" in r.stderr and "cannot be made" in r.stderr, r.stderr[-2000:]
    assert "events: data ready" not in r.stderr  # nothing generated, nothing measured


def test_the_pandas_module_says_it_is_not_a_script(bench):
    r = bench("pandas_features.py")
    assert r.returncode == 1 and "bench/features.py --variants pandas" in r.stderr, r.stderr
