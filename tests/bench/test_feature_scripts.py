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


def test_a_childs_peak_rss_is_its_own_not_its_parents(tmp_path):
    """getrusage's ru_maxrss carries the parent's peak through fork and exec: a child of a parent
    that had generated a 10M log reported the generator's 0.65 GB as its own."""
    import subprocess
    import sys
    from pathlib import Path

    features = Path(__file__).resolve().parents[2] / "bench" / "features.py"
    child = (f"import resource, runpy; f = runpy.run_path({str(features)!r}); "
             "print(f['own_peak_rss'](), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")
    parent = ("import subprocess, sys\n"
              "big = bytearray(400 * 2**20)\n"
              "for i in range(0, len(big), 4096): big[i] = 1  # resident, not only reserved\n"
              f"print(subprocess.run([sys.executable, '-c', {child!r}], capture_output=True, text=True, check=True).stdout)")
    own, inherited = map(int, subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                                             check=True, cwd=tmp_path).stdout.split())
    assert inherited > 400 * 2**20  # the old reading: the parent's 400 MB
    assert own < 200 * 2**20, own  # the child's own: an interpreter and the script's imports
