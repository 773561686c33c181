"""Calibration across training dates: how the out-of-time calibration slope moves between snapshots.

    python bench/calibration.py [--customers 20000] [--seed 7] [--dates 2026-05-31 ... ]
                                [--out bench/results/calibration.json]

On the demo shop (``make demo``'s: generated with behaviour drifting from 2026-10-31, strength
0.8), it trains each target as of each date (``dynseg train --as-of D``'s fit, without the
registry) and prints, per date, the test snapshot's calibration slope with its bootstrap 95 %
interval, calibration intercept, mean predicted against realized rate, Brier and ROC AUC. One
snapshot's slope away from 1 is what a single test cutoff shows; a slope away from 1 at most
dates would be a bias of the method.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]  # bench/features.py shadows `features`
sys.path.insert(0, str(BENCH.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from features.asof import parse_as_of  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.jobs.features import training_set_job  # noqa: E402
from pipeline.jobs.train import fit_and_evaluate  # noqa: E402
from pipeline.synthetic import generate, write  # noqa: E402

DATES = ("2026-05-31", "2026-06-30", "2026-07-31", "2026-08-31", "2026-09-30", "2026-10-31")


def _date(text: str) -> str:
    """A training date, checked before the shop is generated (a typo failed after minutes of work)."""
    try:
        parse_as_of(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    import runpy

    needs = runpy.run_path(str(BENCH / "_needs.py"))  # (this folder is off sys.path: run from its file)
    ap.add_argument("--customers", type=needs["count"], default=20_000,
                    help="customers in the generated shop (default 20000, the README's figures)")
    ap.add_argument("--seed", type=int, default=7, help="the generator's seed")
    ap.add_argument("--dates", nargs="+", default=list(DATES), type=_date,
                    help="training dates (as_of), YYYY-MM-DD; default: six month-ends, 2026-05-31 to 2026-10-31")
    ap.add_argument("--targets", nargs="+", default=["purchase", "churn"], choices=["purchase", "churn"])
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "calibration.json")
    args = ap.parse_args(argv)
    needs["writable_out"](args.out, ap)
    console = Console(width=160)
    tmp = Path(tempfile.mkdtemp(prefix="dynseg-calibration-"))
    try:
        write(generate(args.customers, seed=args.seed, end="2026-11-27", drift_from="2026-10-31", drift=0.8),
              tmp / ".dynseg" / "data")
        shutil.copytree(BENCH.parent / "configs", tmp / "configs", ignore=shutil.ignore_patterns("local"))
        cfg = load_config(tmp)
        results = []
        with console.status("training") as status:
            for target in args.targets:
                for d in args.dates:
                    status.update(f"training {target} as of {d}")
                    td = training_set_job(cfg, target, parse_as_of(d))
                    model, ev, _, _ = fit_and_evaluate(cfg, td)
                    m = ev.table.set_index("scorer").loc["model"]
                    results.append({"target": target, "as_of": d, "test_cutoff": td.plan.cutoffs[0].strftime("%Y-%m-%d"),
                                    **{k: float(m[k]) for k in ("calibration_slope", "calibration_slope_ci_low",
                                                                "calibration_slope_ci_high", "calibration_intercept",
                                                                "mean_predicted", "realized_rate", "brier", "roc_auc")}})
        table = Table(title=f"Out-of-time calibration by training date ({args.customers:,} customers, seed {args.seed}, "
                            "behaviour drifting from 2026-10-31)", title_justify="left")
        for c in ("target", "as of", "test cutoff", "slope", "95% CI", "intercept", "mean pred", "realized", "Brier",
                  "ROC AUC"):
            table.add_column(c, justify="left" if c in ("target", "as of", "test cutoff") else "right")
        for r in results:
            table.add_row(r["target"], r["as_of"], r["test_cutoff"], f"{r['calibration_slope']:.3f}",
                          f"[{r['calibration_slope_ci_low']:.2f}, {r['calibration_slope_ci_high']:.2f}]",
                          f"{r['calibration_intercept']:+.3f}", f"{r['mean_predicted']:.4f}",
                          f"{r['realized_rate']:.4f}", f"{r['brier']:.4f}", f"{r['roc_auc']:.4f}")
        console.print(table)
        summary = {}
        for target in args.targets:
            slopes = [r["calibration_slope"] for r in results if r["target"] == target]
            summary[target] = {"median_slope": statistics.median(slopes), "min": min(slopes), "max": max(slopes)}
            console.print(f"{target}: median slope {summary[target]['median_slope']:.3f} "
                          f"(range {min(slopes):.3f} to {max(slopes):.3f}) over {len(slopes)} training dates")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"customers": args.customers, "seed": args.seed, "results": results,
                                        "summary": summary}, indent=2))
        console.print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
