"""Quality benchmark: the product's model vs baselines, out of time, on generated data.

    python bench/quality.py [--customers 20000] [--seed 7] [--out bench/results/quality.json]

Two logs from the same synthetic shop: the full event log, and a purchases-only log (customer_id,
ts, amount; no email, web or profile data). For each, and for both targets, it builds the stacked
training set, fits the calibrated LightGBM model, and prints the out-of-time test table beside the
recency, RFM and BG/NBD baselines (calibrated the same way on the validation snapshot). The target:
the model ranks at least as well as the best baseline (AUC) and is better calibrated than any
(Brier). On the purchases-only log BG/NBD ties the purchase model: that row's MISS is a finding,
reported as measured (README, *Benchmarks*).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # bench/features.py shadows `features`
REPO = BENCH.parent

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.config import load_config  # noqa: E402
from pipeline.jobs.features import training_set_job  # noqa: E402
from pipeline.jobs.train import fit_and_evaluate  # noqa: E402
from pipeline.synthetic import generate, write  # noqa: E402


def _project(root: Path, data: Path, purchases_only: bool) -> Path:
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))
    sources = {"events": {"format": "parquet", "path": str(data / "events.parquet")}}
    if not purchases_only:
        sources |= {"customers": {"format": "parquet", "path": str(data / "customers.parquet")},
                    "identities": {"format": "parquet", "path": str(data / "identities.parquet")}}
    (root / "configs" / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import runpy

    needs = runpy.run_path(str(BENCH / "_needs.py"))  # (this folder is off sys.path: run from its file)
    ap.add_argument("--customers", type=needs["count"], default=20_000,
                    help="customers in the generated shop (default 20000, the README's figures)")
    ap.add_argument("--seed", type=int, default=7, help="the generator's seed")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "quality.json")
    args = ap.parse_args(argv)
    needs["writable_out"](args.out, ap)
    console = Console(width=160)
    tmp = Path(tempfile.mkdtemp(prefix="dynseg-quality-"))
    try:
        shop = generate(args.customers, seed=args.seed, end="2026-11-27")
        full = tmp / "full"
        write(shop, full)
        sparse = tmp / "purchases"
        sparse.mkdir()
        ev = shop.events[shop.events.event_type == "order_completed"][["customer_id", "ts", "amount", "event_type"]]
        ev.to_parquet(sparse / "events.parquet", index=False)
        results = []
        for log, data, only in (("full log", full, False), ("purchases only", sparse, True)):
            cfg = load_config(_project(tmp / f"proj-{only}", data, only))
            for target in ("purchase", "churn"):
                t0 = time.perf_counter()
                td = training_set_job(cfg, target)
                model, ev_, note, _ = fit_and_evaluate(cfg, td)
                seconds = time.perf_counter() - t0
                for row in ev_.table.itertuples():
                    results.append({"log": log, "target": target, "scorer": row.scorer, "roc_auc": row.roc_auc,
                                    "roc_auc_ci": [row.roc_auc_ci_low, row.roc_auc_ci_high], "pr_auc": row.pr_auc,
                                    "brier": row.brier, "log_loss": row.log_loss, "lift_top_decile": row.lift_top_decile,
                                    "mean_predicted": row.mean_predicted, "realized_rate": row.realized_rate,
                                    "rows_test": int((td.frame.snapshot == "test").sum()), "seconds": seconds,
                                    "base_rate": note})
        table = Table(title=f"Out-of-time test, {args.customers:,} customers, seed {args.seed}", title_justify="left")
        for c in ("log", "target", "scorer", "ROC AUC", "95% CI", "PR AUC", "Brier", "log loss", "lift@10%",
                  "mean pred", "realized"):
            table.add_column(c, justify="left" if c in ("log", "target", "scorer") else "right")
        for r in results:
            table.add_row(r["log"], r["target"], r["scorer"], f"{r['roc_auc']:.4f}",
                          f"[{r['roc_auc_ci'][0]:.3f}, {r['roc_auc_ci'][1]:.3f}]", f"{r['pr_auc']:.4f}",
                          f"{r['brier']:.4f}", f"{r['log_loss']:.4f}", f"{r['lift_top_decile']:.2f}",
                          f"{r['mean_predicted']:.4f}", f"{r['realized_rate']:.4f}")
        console.print(table)
        df = pd.DataFrame(results)
        verdicts = []
        for (log, target), g in df.groupby(["log", "target"], sort=False):
            m = g[g.scorer == "model"].iloc[0]
            b = g[g.scorer != "model"]
            ok_rank, ok_cal = m.roc_auc >= b.roc_auc.max(), m.brier < b.brier.min()
            verdicts.append({"log": log, "target": target, "ranks_at_least_as_well": bool(ok_rank),
                             "better_calibrated": bool(ok_cal)})
            console.print(f"{log:15s} {target:9s} AUC vs best baseline {m.roc_auc - b.roc_auc.max():+.4f} "
                          f"({'ok' if ok_rank else 'MISS'}); Brier vs best baseline {m.brier - b.brier.min():+.4f} "
                          f"({'ok' if ok_cal else 'MISS'})")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"customers": args.customers, "seed": args.seed, "results": results,
                                        "verdicts": verdicts}, indent=2, default=str))
        console.print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
