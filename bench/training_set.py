"""Benchmark: a training set's snapshots with the feature query compiled once vs at every cutoff.

    python bench/training_set.py [--customers 5000 50000] [--snapshots 6] [--repeats 3] [--out FILE]

For each shop size it writes the synthetic demo shop (``pipeline.synthetic``) to a temp project,
loads it once, and builds the purchase model's training set (features and labels at every
snapshot's cutoff, as ``dynseg train`` does) --repeats times each way, alternating, in this one
process:

  once        the DuckDB engine's ``at_cutoffs``: the feature expression built at two probe instants,
              compiled once, each cutoff put into the SQL (what ``build_training_set`` uses)
  per cutoff  the baseline: the expression built and compiled by Ibis at every cutoff

and checks both give the same frame. It prints a table (median seconds, the ratio) and writes JSON.
The saving is Ibis's work per snapshot (about 0.7 s), so it shows on small and mid-sized shops;
on a large log the queries' own time dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # see bench/features.py
END = "2026-11-27"


def build(customers: int, snapshots: int, repeats: int, scratch: Path) -> dict:
    import pandas as pd

    from features.asof import parse_as_of, parse_duration
    from features.engines import FeatureEngine
    from features.engines.duckdb import DuckDBEngine
    from features.training_set import build_training_set, plan_snapshots
    from pipeline.config import load_config
    from pipeline.jobs.data import load_validated
    from pipeline.jobs.features import data_profile, feature_spec, label_spec
    from pipeline.synthetic import generate, write

    root = scratch / f"shop_{customers}"
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))
    os.environ["DYNSEG_PROJECT"] = str(root)
    write(generate(customers, seed=7, end=END), root / ".dynseg" / "data")
    cfg = load_config(root)
    as_of = parse_as_of(END)  # the end of that day
    data = load_validated(cfg, as_of)
    profile, spec, label = data_profile(cfg, data), feature_spec(cfg), label_spec(cfg, "purchase", None)
    first, last = data.report.time_range(cfg.role_of)
    t = cfg.training
    plan = plan_snapshots(first, last, label.horizon, snapshots, parse_duration(t.step), parse_duration(t.min_history))

    class PerCutoff(DuckDBEngine):
        at_cutoffs = FeatureEngine.at_cutoffs  # the baseline: build and compile at every cutoff

    engines = {"once": DuckDBEngine(data.con), "per cutoff": PerCutoff(data.con)}
    build_training_set(engines["once"], spec, profile, label, plan)  # warm-up: first-use costs untimed
    times: dict[str, list[float]] = {name: [] for name in engines}
    frames = {}
    for _ in range(repeats):
        for name, eng in engines.items():
            t0 = time.perf_counter()
            frames[name] = build_training_set(eng, spec, profile, label, plan)
            times[name].append(time.perf_counter() - t0)
    pd.testing.assert_frame_equal(frames["once"], frames["per cutoff"])
    events = data.con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    data.con.close()
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"customers": customers, "events": int(events), "snapshots": len(plan.cutoffs),
            "rows": len(frames["once"]), "seconds": times, "median_s": med,
            "per_cutoff_over_once": med["per cutoff"] / med["once"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import runpy

    needs = runpy.run_path(str(BENCH / "_needs.py"))  # (this folder is off sys.path: run from its file)
    ap.add_argument("--customers", nargs="+", type=needs["count"], default=[5000, 50_000],
                    help="shop sizes in customers (default: 5000 50000; about 43 events each)")
    ap.add_argument("--snapshots", type=needs["count"], default=6, help="snapshots per training set (at least 3: "
                                                                        "test, valid and train)")
    ap.add_argument("--repeats", type=needs["count"], default=3, help="runs of each way, alternating (medians)")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "training_set.json")
    args = ap.parse_args(argv)
    if args.snapshots < 3:
        ap.error(f"--snapshots {args.snapshots}: at least 3 (one test, one valid, one or more train)")
    if min(args.customers) < 500:
        ap.error(f"--customers {min(args.customers)}: at least 500 (fewer leave a snapshot without both labels)")
    needs["writable_out"](args.out, ap)

    from rich.console import Console
    from rich.table import Table

    scratch = Path(tempfile.mkdtemp(prefix="dynseg-bench-ts-"))
    try:
        rows = [build(n, args.snapshots, args.repeats, scratch) for n in args.customers]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    table = Table(title=f"Training set ({args.snapshots} snapshots): feature query compiled once vs per cutoff "
                        f"(median of {args.repeats})")
    for col in ("customers", "events", "rows", "once (s)", "per cutoff (s)", "per cutoff / once"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(f"{r['customers']:,}", f"{r['events']:,}", f"{r['rows']:,}", f"{r['median_s']['once']:.2f}",
                      f"{r['median_s']['per cutoff']:.2f}", f"{r['per_cutoff_over_once']:.2f}x")
    Console().print(table)
    meta = {"when": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
