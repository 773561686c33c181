"""Benchmark: reason codes for 100k customers vs LightGBM's pred_contrib on the same rows.

    python bench/explain.py [--customers 20000] [--rows 100000] [--targets churn purchase]
                            [--repeats 3] [--leaves 15 7] [--out bench/results/explain.json]

For each target it generates the synthetic shop (seed 7), builds the stacked training set and
fits the calibrated model as ``dynseg train`` does (``fit_and_evaluate``), then takes ``--rows``
feature rows (every snapshot, cycled when the population is smaller) and measures, as the median
of ``--repeats`` runs on those same rows:

  reasons             ``reason_codes(model, rows, target)``: model matrix, fast TreeSHAP, points
                      and words, on all cores (and on one core: ``reasons 1 thread``)
  shap                ``contributions(model, rows)`` alone (fast TreeSHAP, all cores)
  pred_contrib        LightGBM's ``pred_contrib=True`` on the same matrix, all cores (and on one
                      core with ``--lightgbm-one-thread``: slow, ~3 ms a row for 300 trees)

It checks that the fast values equal pred_contrib's (largest absolute difference) and reports
customers/s and the time extrapolated linearly to 1,000,000 customers. ``--leaves`` also fits
models with fewer leaves per tree on the same training set: trees, out-of-time AUC and speed
(pred_contrib there on 10,000 rows). The machine is shared: load averages go into the JSON.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import dataclasses
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # bench/features.py shadows `features`
REPO = BENCH.parent

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from models import explain, treeshap  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.jobs.features import training_set_job  # noqa: E402
from pipeline.jobs.train import fit_and_evaluate  # noqa: E402
from pipeline.synthetic import generate, write  # noqa: E402

MILLION = 1_000_000


def _project(root: Path, data: Path) -> Path:
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))
    sources = {name: {"format": "parquet", "path": str(data / f"{name}.parquet")}
               for name in ("events", "customers", "identities")}
    (root / "configs" / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return root


def _median_seconds(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def tree_shape(model) -> dict:
    """Trees, leaves and depth of the model as used (best iteration)."""
    dump = model.booster_.booster_.dump_model(num_iteration=model.best_iteration_)
    depths, leaves = [], []

    def walk(node, depth):
        if "split_index" not in node:
            depths.append(depth)
            return
        walk(node["left_child"], depth + 1)
        walk(node["right_child"], depth + 1)

    for tree in dump["tree_info"][:model.best_iteration_]:
        before = len(depths)
        walk(tree["tree_structure"], 0)
        leaves.append(len(depths) - before)
    t = time.perf_counter()
    trees = treeshap.compile_trees(dump, model.best_iteration_, len(model.features_))
    return {"trees": model.best_iteration_, "leaves_per_tree": float(np.mean(leaves)), "max_leaf_depth": int(max(depths)),
            "mean_leaf_depth": float(np.mean(depths)), "mean_features_per_path": float(trees.leaf_d.mean()),
            "tables_mb": trees.table_bytes / 2**20, "compile_seconds": time.perf_counter() - t}


def measure(model, rows: pd.DataFrame, target: str, repeats: int, one_thread_lightgbm: bool) -> list[dict]:
    n = len(rows)
    explain.contributions(model, rows.head(1000))  # compile the leaf tables (once per model) and load the kernels
    variants = [
        ("reasons", lambda: explain.reason_codes(model, rows, target)),
        ("reasons 1 thread", lambda: explain.reason_codes(model, rows, target, n_jobs=1)),
        ("shap", lambda: explain.contributions(model, rows)),
        ("pred_contrib", lambda: explain.contributions(model, rows, method="lightgbm")),
    ]
    if one_thread_lightgbm:
        variants.append(("pred_contrib 1 thread", lambda: explain.contributions(model, rows, method="lightgbm", n_jobs=1)))
    out, results = [], {}
    for name, fn in variants:
        seconds, runs, results[name] = _median_seconds(fn, repeats)
        out.append({"variant": name, "rows": n, "seconds": seconds, "runs": runs, "customers_per_s": n / seconds,
                    "seconds_per_million": seconds * MILLION / n})
        print(f"  {name}: {seconds:.2f}s median of {repeats} ({n / seconds:,.0f} customers/s)", file=sys.stderr)
    fast, ref = results["shap"][0].to_numpy(), results["pred_contrib"][0].to_numpy()
    difference = float(np.abs(fast - ref).max())
    reasons = results["reasons"]
    for r in out:
        r["max_abs_difference_vs_pred_contrib"] = difference
    out[0]["example"] = reasons.reason_1.dropna().head(3).tolist()
    return out


def smaller_trees(cfg, td, leaves: int, rows: pd.DataFrame, target: str, repeats: int) -> dict:
    """The same training set with ``leaves`` leaves per tree: AUC out of time and explanation speed."""
    params = cfg.training.model.model_copy(update={"num_leaves": leaves})
    small_cfg = dataclasses.replace(cfg, training=cfg.training.model_copy(update={"model": params}))
    model, ev, _, _ = fit_and_evaluate(small_cfg, td)
    explain.contributions(model, rows.head(1000))
    seconds, _, _ = _median_seconds(lambda: explain.reason_codes(model, rows, target), repeats)
    sample = rows.head(10_000)
    ref_seconds, _, _ = _median_seconds(lambda: explain.contributions(model, sample, method="lightgbm"), 1)
    return {"num_leaves": leaves, **tree_shape(model), **_quality(ev), "reasons_customers_per_s": len(rows) / seconds, "pred_contrib_customers_per_s": len(sample) / ref_seconds}


def _quality(ev) -> dict:
    m = ev.table.set_index("scorer").loc["model"]
    return {"roc_auc": float(m.roc_auc), "roc_auc_ci": [float(m.roc_auc_ci_low), float(m.roc_auc_ci_high)],
            "brier": float(m.brier)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import runpy

    needs = runpy.run_path(str(BENCH / "_needs.py"))  # (this folder is off sys.path: run from its file)
    ap.add_argument("--customers", type=needs["count"], default=20_000, help="customers in the generated shop (training)")
    ap.add_argument("--rows", type=needs["count"], default=100_000, help="customers explained per measurement")
    ap.add_argument("--targets", nargs="+", default=["churn", "purchase"], choices=["churn", "purchase"])
    ap.add_argument("--repeats", type=needs["count"], default=3)
    ap.add_argument("--leaves", type=needs["count"], nargs="*", default=[15, 7],
                    help="also fit models with these num_leaves")
    ap.add_argument("--lightgbm-one-thread", action="store_true", help="also time pred_contrib on one thread")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "explain.json")
    args = ap.parse_args(argv)
    needs["writable_out"](args.out, ap)
    import lightgbm
    import numba

    console = Console(width=170)
    meta = {"cpus": os.cpu_count(), "python": platform.python_version(), "lightgbm": lightgbm.__version__,
            "numba": numba.__version__, "numba_threads": numba.get_num_threads(), "customers": args.customers,
            "rows": args.rows, "repeats": args.repeats, "seed": args.seed, "started": datetime.now().isoformat(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
    tmp = Path(tempfile.mkdtemp(prefix="dynseg-explain-"))
    results = []
    try:
        write(generate(args.customers, seed=args.seed, end="2026-11-27"), tmp / "data")
        cfg = load_config(_project(tmp / "proj", tmp / "data"))
        for target in args.targets:
            td = training_set_job(cfg, target)
            model, ev, _, _ = fit_and_evaluate(cfg, td)
            features = td.frame
            rows = features.iloc[np.arange(args.rows) % len(features)].reset_index(drop=True)
            shape = tree_shape(model)
            quality = _quality(ev)
            print(f"{target}: {shape['trees']} trees, AUC {quality['roc_auc']:.4f}; explaining {len(rows):,} rows "
                  f"({len(features):,} distinct)", file=sys.stderr)
            entry = {"target": target, "model": shape | quality | {"num_leaves": cfg.training.model.num_leaves},
                     "distinct_rows": len(features),
                     "measurements": measure(model, rows, target, args.repeats, args.lightgbm_one_thread),
                     "smaller_trees": [smaller_trees(cfg, td, leaves, rows, target, args.repeats) for leaves in args.leaves]}
            results.append(entry)
        meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        _print(console, results, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
        console.print(f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']}; wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _print(console: Console, results: list[dict], args) -> None:
    table = Table(title=f"Reason codes vs pred_contrib, {args.rows:,} customers, median of {args.repeats} "
                        f"({args.customers:,}-customer shop, seed {args.seed})", title_justify="left")
    for c in ("target", "trees (leaves/tree, max depth)", "variant", "seconds", "customers/s", "1M customers",
              "vs pred_contrib", "max |fast − pred_contrib|"):
        table.add_column(c, justify="left" if c in ("target", "variant", "trees (leaves/tree, max depth)") else "right")
    for r in results:
        m = r["model"]
        ref = next(x for x in r["measurements"] if x["variant"] == "pred_contrib")
        for x in r["measurements"]:
            table.add_row(r["target"], f"{m['trees']} ({m['leaves_per_tree']:.0f}, {m['max_leaf_depth']})", x["variant"],
                          f"{x['seconds']:.2f}", f"{x['customers_per_s']:,.0f}", f"{x['seconds_per_million']:.0f} s",
                          f"{ref['seconds'] / x['seconds']:.1f}×", f"{x['max_abs_difference_vs_pred_contrib']:.1e}")
    console.print(table)
    small = Table(title="Fewer leaves per tree: same training set, out-of-time test", title_justify="left")
    for c in ("target", "num_leaves", "trees", "max depth", "ROC AUC", "95% CI", "Brier", "reasons/s", "pred_contrib/s"):
        small.add_column(c, justify="left" if c == "target" else "right")
    for r in results:
        m = r["model"]
        ref = next(x for x in r["measurements"] if x["variant"] == "pred_contrib")
        rea = next(x for x in r["measurements"] if x["variant"] == "reasons")
        for s in [m | {"reasons_customers_per_s": rea["customers_per_s"], "pred_contrib_customers_per_s": ref["customers_per_s"]},
                  *r["smaller_trees"]]:
            small.add_row(r["target"], str(s["num_leaves"]), str(s["trees"]), str(s["max_leaf_depth"]), f"{s['roc_auc']:.4f}",
                          f"[{s['roc_auc_ci'][0]:.3f}, {s['roc_auc_ci'][1]:.3f}]", f"{s['brier']:.4f}",
                          f"{s['reasons_customers_per_s']:,.0f}", f"{s['pred_contrib_customers_per_s']:,.0f}")
    console.print(small)
    for r in results:
        for line in r["measurements"][0].get("example", []):
            console.print(f"  {r['target']}: {line}")


if __name__ == "__main__":
    main()
