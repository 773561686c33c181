"""Benchmark: building ``customer_features`` with dynseg (DuckDB) vs a pandas baseline vs a floor query.

    python bench/features.py --events 1M 10M 50M [--out bench/results/features.json]
    python bench/features.py --events 1M 10M --variants dynseg floor spark   # what Spark costs here

For each size N it writes a plausible event log of N events (~50 per customer, so N/50 customers;
time-ordered over two years, role-mapped event names from configs/roles.yaml, amounts for
purchases and refunds, categories) and a customers file as Parquet into a temp folder, then
measures, for the same as_of (the end of the log):

  dynseg  end to end from the Parquet files, as ``dynseg features build`` runs: ``load_validated``
          (validation + canonical views), the data profile, ``customer_features`` executed by
          ``DuckDBEngine`` into pandas, then the count of its customers without a profile.
  pandas  read the Parquet files with pandas, map event names to roles, ``pandas_customer_features``
          (bench/pandas_features.py); skipped when its projected peak RSS exceeds --max-rss-gb.
  floor   ``SELECT customer_id, count(*), max(ts), sum(amount) FROM read_parquet(...) GROUP BY 1``
          on DuckDB, into pandas: the least any per-customer aggregation over the log must cost.
  spark   (only when asked: ``--variants dynseg floor spark``) ``dynseg features build --engine
          spark`` without the file write: validation on DuckDB, the canonical log exported to
          Parquet, the same feature expression run by Spark in local mode (local[2]), into pandas.
          The session is up before the timed runs (the warm-up starts it); its peak RSS is the
          process tree's (the JVM is a child process), sampled every 50 ms.

Every run is a fresh subprocess (this script with ``--variant``; a warm-up on a tiny log first, not
timed), so its peak RSS is its own and no run inherits the previous one's allocator caches. Wall
time and peak RSS are medians over --repeats runs (default 3; the pandas baseline once above 10M
events, where it takes minutes and 8 GB); the JSON keeps every run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before numpy/duckdb spin up thread pools

import argparse
import gc
import json
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# Run as a script, this folder is sys.path[0], where this file would shadow the `features` package
# (the editable install's finder comes after every sys.path entry): take it off the path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
END = datetime(2026, 11, 28)  # the log covers [END - 730 days, END); as_of = END
HISTORY_DAYS = 730
EVENTS_PER_CUSTOMER = 50
CHUNK = 2_000_000  # events per generated chunk / row group batch
VARIANTS = ("dynseg", "pandas", "floor", "spark")
DEFAULT_VARIANTS = ("dynseg", "pandas", "floor")

# Share of each role in the log (normalised); every feature group has data.
ROLE_MIX = {
    "page_view": 0.34, "email_send": 0.22, "add_to_cart": 0.10, "email_open": 0.08, "purchase": 0.06,
    "signup": 0.02, "email_click": 0.02, "consent_granted": 0.02, "consent_withdrawn": 0.004,
    "refund": 0.004, "support_ticket": 0.005, "unsubscribe": 0.003, "bounce": 0.002, "complaint": 0.0005,
}
CATEGORIES = ("apparel", "shoes", "beauty", "home", "electronics", "sports", "toys", "grocery")
CHANNELS = ("email", "web", "app", "store")
COUNTRIES = ("DE", "FR", "GB", "NL", "ES", "IT")


# ---------------------------------------------------------------- sizes
def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else (f"{n // 1_000}k" if n % 1_000 == 0 else str(n))


# ---------------------------------------------------------------- data
def event_names() -> dict[str, str]:
    """Role -> the first event name mapped to it in configs/roles.yaml."""
    import yaml

    roles = yaml.safe_load((REPO / "configs" / "roles.yaml").read_text())["event_roles"]
    return {role: names[0] for role, names in roles.items() if names}


def generate_log(n_events: int, folder: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``events.parquet`` (n_events rows, time-ordered) and ``customers.parquet`` to ``folder``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_cust = max(1, n_events // EVENTS_PER_CUSTOMER)
    width = max(7, len(str(n_cust - 1)))
    ids = pa.array(np.char.add("c", np.char.zfill(np.arange(n_cust).astype(str), width)))
    # very uneven activity across customers (gamma), like real shops
    activity = rng.gamma(0.7, 1.0, n_cust)
    cum = np.cumsum(activity / activity.sum())
    names = event_names()
    roles = [r for r in ROLE_MIX if r in names]
    p = np.array([ROLE_MIX[r] for r in roles])
    role_cum = np.cumsum(p / p.sum())
    type_dict = pa.array([names[r] for r in roles])
    code = {r: i for i, r in enumerate(roles)}
    purchase, refund = code["purchase"], code["refund"]
    with_category = np.zeros(len(roles), bool)
    with_category[[code[r] for r in ("purchase", "refund", "add_to_cart", "page_view")]] = True
    is_email = np.zeros(len(roles), bool)
    is_email[[code[r] for r in ("email_send", "email_open", "email_click", "unsubscribe", "bounce", "complaint")]] = True

    end_us = int((END - datetime(1970, 1, 1)).total_seconds()) * 1_000_000
    start_us = end_us - HISTORY_DAYS * 86_400 * 1_000_000
    bounds = np.linspace(start_us, end_us, -(-n_events // CHUNK) + 1).astype(np.int64)
    schema = pa.schema([("event_id", pa.string()), ("customer_id", pa.string()), ("event_type", pa.string()),
                        ("ts", pa.timestamp("us")), ("amount", pa.float64()), ("category", pa.string()),
                        ("channel", pa.string())])
    events_path = folder / "events.parquet"
    done = 0
    with pq.ParquetWriter(events_path, schema) as writer:
        for k in range(len(bounds) - 1):
            n = min(CHUNK, n_events - done)
            cust = np.minimum(np.searchsorted(cum, rng.random(n)), n_cust - 1)
            role = np.searchsorted(role_cum, rng.random(n)).astype(np.int8)
            ts = np.sort(rng.integers(bounds[k], bounds[k + 1], n))
            amount = np.where(role == purchase, np.round(np.exp(rng.normal(np.log(40), 0.6, n)), 2), np.nan)
            amount = np.where(role == refund, np.round(np.exp(rng.normal(np.log(30), 0.6, n)), 2), amount)
            cat = np.where(with_category[role], rng.integers(0, len(CATEGORIES), n), -1)
            chan = np.where(is_email[role], 0, rng.integers(1, len(CHANNELS), n))
            seq = pc.utf8_lpad(pa.array(np.arange(done + 1, done + n + 1)).cast(pa.string()), 10, "0")
            table = pa.table({
                "event_id": pc.binary_join_element_wise("e", seq, ""),
                "customer_id": pa.DictionaryArray.from_arrays(pa.array(cust.astype(np.int32)), ids).dictionary_decode(),
                "event_type": pa.DictionaryArray.from_arrays(pa.array(role.astype(np.int32)), type_dict).dictionary_decode(),
                "ts": pa.array(ts, pa.timestamp("us")),
                "amount": pa.array(amount, mask=np.isnan(amount)),
                "category": _decode(cat, CATEGORIES),
                "channel": _decode(chan, CHANNELS),
            }, schema=schema)
            writer.write_table(table, row_group_size=1_000_000)
            done += n
    signup = rng.integers(start_us - 365 * 86_400 * 1_000_000, end_us - 86_400 * 1_000_000, n_cust)
    updated = signup + (rng.random(n_cust) * (end_us - signup)).astype(np.int64)
    customers = pa.table({
        "customer_id": ids,
        "signup_at": pa.array(signup, pa.timestamp("us")),
        "email_consent": pa.array(rng.random(n_cust) < 0.6),
        "consent_updated_at": pa.array(updated, pa.timestamp("us")),
        "country": _decode(rng.integers(0, len(COUNTRIES), n_cust), COUNTRIES),
        "plan": _decode(np.where(rng.random(n_cust) < 0.2, 1, 0), ("free", "plus")),
    })
    customers_path = folder / "customers.parquet"
    pq.write_table(customers, customers_path)
    return {"events": events_path, "customers": customers_path}


def _decode(codes, labels):
    import numpy as np
    import pyarrow as pa

    codes = np.asarray(codes)
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0),
                                          pa.array(list(labels))).dictionary_decode()


def _generator_version() -> str:
    """A digest of the generator's code and the role names it writes: a reused log must be this one's."""
    import hashlib
    import inspect

    text = inspect.getsource(generate_log) + json.dumps([ROLE_MIX, CATEGORIES, CHANNELS, COUNTRIES, event_names()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ensure_data(n_events: int, root: Path) -> dict[str, Path]:
    """Generated files for this size under ``root`` (reused when a previous run completed them)."""
    folder = root / f"events_{size_label(n_events)}"
    done = folder / ".complete"
    paths = {"events": folder / "events.parquet", "customers": folder / "customers.parquet"}
    made_by = _generator_version()
    if not done.exists() or json.loads(done.read_text() or "{}").get("generator") not in (made_by, None):
        # a log made by another version of the generator is made again (a marker from before the
        # version was kept is taken as this version's: the generator has not changed since)
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        generate_log(n_events, folder)
        done.write_text(json.dumps({"events": n_events, "seconds": time.perf_counter() - t, "generator": made_by}))
    return paths


# ---------------------------------------------------------------- variants (run in a child process)
def _project(paths: dict[str, Path], scratch: Path) -> Path:
    """A temp dynseg project: the repo's configs, a catalog pointing at the generated files."""
    import yaml

    root = scratch / "project"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))
    sources = {name: {"format": "parquet", "path": str(path)} for name, path in paths.items()}
    (root / "configs" / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))
    return root


def run_dynseg(paths: dict[str, Path], as_of: datetime, scratch: Path) -> dict[str, float]:
    from features.customer_features import customer_features
    from features.engines.duckdb import DuckDBEngine
    from pipeline.config import load_config
    from pipeline.jobs.data import load_validated
    from pipeline.jobs.features import data_profile, feature_spec, unprofiled_warnings

    t0 = time.perf_counter()
    cfg = load_config(_project(paths, scratch))
    data = load_validated(cfg, as_of, count_unknown_customers=False)  # as a run loads (load_for_run)
    t1 = time.perf_counter()
    profile = data_profile(cfg, data, before=as_of)  # as features build measures it: before the cutoff
    t2 = time.perf_counter()
    eng = DuckDBEngine(data.con)
    frame = eng.execute(customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), profile,
                                          consents=eng.consents()))
    t3 = time.perf_counter()
    unprofiled_warnings(data, frame["customer_id"])  # the run's customers without a profile, as a run counts them
    t4 = time.perf_counter()
    rows = len(frame)
    data.con.close()
    return {"total": t4 - t0, "validate_load": t1 - t0, "profile": t2 - t1, "features": t3 - t2,
            "unprofiled": t4 - t3, "rows": rows}


def run_pandas(paths: dict[str, Path], as_of: datetime, scratch: Path) -> dict[str, float]:
    import pandas as pd

    from features.customer_features import DataProfile, FeatureSpec
    from pipeline.config import load_config

    pandas_customer_features = _bench_module("pandas_features").pandas_customer_features

    t0 = time.perf_counter()
    cfg = load_config(_project(paths, scratch))
    events = pd.read_parquet(paths["events"], columns=["customer_id", "event_type", "ts", "amount", "category"])
    customers = pd.read_parquet(paths["customers"])
    t1 = time.perf_counter()
    # event name -> role: map the few distinct names, not every row
    events["role"] = events["event_type"].astype("category").map(cfg.role_of)
    events = events.drop(columns="event_type")
    t2 = time.perf_counter()
    profile = DataProfile(frozenset(events["role"].cat.categories), has_signup=bool(customers["signup_at"].notna().any()),
                          has_consent_profile=bool(customers["email_consent"].notna().any()
                                                   and customers["consent_updated_at"].notna().any()),
                          categorical=("country", "plan"))
    frame = pandas_customer_features(events, customers, as_of, FeatureSpec(), profile)
    t3 = time.perf_counter()
    return {"total": t3 - t0, "read": t1 - t0, "map_roles": t2 - t1, "features": t3 - t2, "rows": len(frame)}


def run_floor(paths: dict[str, Path], as_of: datetime, scratch: Path) -> dict[str, float]:
    from features.engine import connect

    t0 = time.perf_counter()
    con = connect()
    path = str(paths["events"]).replace("'", "''")
    frame = con.execute(f"SELECT customer_id, count(*), max(ts), sum(amount) FROM read_parquet('{path}') "
                        "GROUP BY customer_id").df()
    t1 = time.perf_counter()
    con.close()
    return {"total": t1 - t0, "rows": len(frame)}


def run_spark(paths: dict[str, Path], as_of: datetime, scratch: Path) -> dict[str, float]:
    from pipeline.config import load_config
    from pipeline.jobs.features import build_features_job

    t0 = time.perf_counter()
    cfg = load_config(_project(paths, scratch))
    run = build_features_job(cfg, as_of, "spark")  # as `features build --engine spark`, no file written
    t1 = time.perf_counter()
    return {"total": t1 - t0, "rows": len(run.frame)}


def _bench_module(name: str):
    """Import bench/<name>.py by path (this folder is kept off sys.path, see the top)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


RUNNERS = {"dynseg": run_dynseg, "pandas": run_pandas, "floor": run_floor, "spark": run_spark}


def child(variant: str, data_dir: Path, repeats: int, as_of: datetime) -> None:
    """Run one variant ``repeats`` times; print one JSON line: times per run and own peak RSS."""
    paths = {"events": data_dir / "events.parquet", "customers": data_dir / "customers.parquet"}
    scratch = Path(tempfile.mkdtemp(prefix=f"dynseg-bench-{variant}-"))
    runs = []
    try:
        # warm-up on a tiny log: lazy imports, Ibis/sqlglot and DuckDB first-use costs are not timed
        RUNNERS[variant](generate_log(20_000, scratch / "warmup"), as_of, scratch)
        gc.collect()
        for _ in range(repeats):
            runs.append(RUNNERS[variant](paths, as_of, scratch))
            gc.collect()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"variant": variant, "runs": runs, "peak_rss_bytes": own_peak_rss()}))


def own_peak_rss() -> int:
    """This process's peak RSS since it started, in bytes: Linux's ``VmHWM``, the high-water mark of
    the memory this program mapped. Not ``getrusage``'s ``ru_maxrss``: the kernel carries that over
    from the parent through fork and exec, so a child of a parent that had generated a 10M log
    reported the generator's 0.65 GB as its own (the floor query included)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # elsewhere (may include the parent's)


# ---------------------------------------------------------------- parent
def measure(variant: str, data_dir: Path, n_events: int, repeats: int, max_rss: float | None) -> dict:
    """Run a variant ``repeats`` times, each in a fresh subprocess; the runs and each one's peak RSS."""
    runs, peaks, sampled = [], [], []
    for _ in range(repeats):
        result = _measure_once(variant, data_dir, n_events, max_rss)
        if "skipped" in result:
            return result
        runs += result["runs"]
        peaks.append(result["peak_rss_bytes"])
        sampled.append(result["sampled_rss_bytes"])
    return {"variant": variant, "runs": runs, "peak_rss_bytes_all": peaks,
            "peak_rss_bytes": statistics.median(peaks), "sampled_rss_bytes": max(sampled)}


def _measure_once(variant: str, data_dir: Path, n_events: int, max_rss: float | None) -> dict:
    """One run in a fresh subprocess; killed if its RSS passes ``max_rss`` bytes."""
    import psutil

    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--data", str(data_dir),
           "--repeats", "1", "--as-of", END.isoformat()]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, sampled, killed = psutil.Process(proc.pid), 0, False
    while proc.poll() is None:
        try:  # the process tree: Spark's JVM is a child process
            tree = [ps, *ps.children(recursive=True)]
            sampled = max(sampled, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        if max_rss and sampled > max_rss:
            proc.kill()
            killed = True
        time.sleep(0.05)
    out, err = proc.communicate()
    if killed:
        return {"variant": variant, "skipped": f"killed: RSS passed {max_rss / 1e9:.0f} GB"}
    if proc.returncode != 0:
        raise RuntimeError(f"variant {variant} at {n_events:,} events failed:\n{err[-4000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result["sampled_rss_bytes"] = sampled
    if variant == "spark":  # getrusage sees the Python process only, not the JVM beside it
        result["peak_rss_bytes"] = sampled
    return result


def summarise(result: dict, n_events: int) -> dict:
    runs = result["runs"]
    steps = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "rows"}
    return {"variant": result["variant"], "events": n_events, "customers": n_events // EVENTS_PER_CUSTOMER,
            "rows": runs[0]["rows"], "runs": len(runs), "seconds": steps["total"],
            "all_seconds": [r["total"] for r in runs], "steps": steps,
            "all_steps": [{k: v for k, v in r.items() if k != "rows"} for r in runs],
            "events_per_s": n_events / steps["total"], "peak_rss_bytes": result["peak_rss_bytes"],
            "peak_rss_bytes_all": result["peak_rss_bytes_all"]}


def print_table(rows: list[dict], meta: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"customer_features build, as_of {END:%Y-%m-%d}, {meta['cpus']} cores, "
                        f"DuckDB {meta['duckdb']}, pandas {meta['pandas']}")
    for col in ("events", "customers", "variant", "runs", "wall s (median)", "events/s", "peak RSS (median, GB)",
                "vs floor", "vs dynseg", "steps (median s)"):
        table.add_column(col, justify="left" if col in ("variant", "steps (median s)") else "right")
    for r in rows:
        if "skipped" in r:
            table.add_row(size_label(r["events"]), f"{r['customers']:,}", r["variant"], "-", "-", "-", "-", "-", "-",
                          f"[yellow]skipped: {r['skipped']}[/]")
            continue
        steps = ", ".join(f"{k} {v:.2f}" for k, v in r["steps"].items() if k != "total")
        table.add_row(size_label(r["events"]), f"{r['customers']:,}", r["variant"], str(r["runs"]),
                      f"{r['seconds']:.2f}", f"{r['events_per_s'] / 1e6:.2f}M", f"{r['peak_rss_bytes'] / 1e9:.2f}",
                      _fmt(r.get("vs_floor")), _fmt(r.get("pandas_over_dynseg", r.get("spark_over_dynseg"))), steps)
    console = Console(width=max(Console().width, 180))
    console.print(table)
    console.print(f"load average before/after: {meta['loadavg_before']} / {meta['loadavg_after']}")


def _goal_value(key: str, value: float) -> str:
    return f"{value / 1e6:.2f}M" if key.startswith("events_per_s") else f"{value:.2f}"


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def targets(rows: list[dict]) -> dict:
    """Targets at the largest size measured (meant for 50M events / 1M customers on 2 cores)."""
    n = max(r["events"] for r in rows)
    by = {r["variant"]: r for r in rows if r["events"] == n and "skipped" not in r}
    d = by.get("dynseg")
    if not d:
        return {}
    out = {"events": n,
           "events_per_s >= 6M": [d["events_per_s"], d["events_per_s"] >= 6e6],
           # GB read strictly as 10^9 bytes, as everywhere in this script
           "peak RSS <= 1.5 GB (10^9 bytes)": [d["peak_rss_bytes"] / 1e9, d["peak_rss_bytes"] <= 1.5e9]}
    if "floor" in by:
        out["dynseg / floor <= 1.5"] = [d["vs_floor"], d["vs_floor"] <= 1.5]
    if "pandas" in by:
        out["pandas / dynseg >= 5"] = [by["pandas"]["pandas_over_dynseg"], by["pandas"]["pandas_over_dynseg"] >= 5]
    return out


def _needs() -> dict:
    """bench/_needs.py's helpers (this folder is off sys.path, see above: run from its file)."""
    import runpy

    return runpy.run_path(str(BENCH / "_needs.py"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    needs = _needs()
    ap.add_argument("--events", nargs="+", default=["1M", "10M"], type=needs["count"],
                    help="log sizes (default: 1M 10M; the targets are for 50M), e.g. 1M 10M 50M")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "features.json")
    ap.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=VARIANTS,
                    help="what to measure (default: dynseg pandas floor; spark only when named)")
    ap.add_argument("--repeats", type=needs["count"], default=None,
                    help="runs per variant, each in a fresh process (default: 3; pandas once above 10M events)")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep generated logs here and reuse them (default: a temp folder, removed at the end)")
    ap.add_argument("--max-rss-gb", type=float, default=16.0,
                    help="kill a variant whose RSS passes this; skip pandas where its projected peak RSS would")
    # internal: one variant in a child process
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--as-of", type=datetime.fromisoformat, default=END, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        child(args.variant, args.data, args.repeats or 1, args.as_of)
        return
    if min(args.events) < 20_000:
        ap.error(f"--events {min(args.events):,}: at least 20k events (the warm-up log alone has 20,000)")
    needs["writable_out"](args.out, ap)
    if args.data_dir is not None:
        try:
            args.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            ap.error(f"--data-dir {args.data_dir}: cannot be made ({e.strerror}); name a writable folder")

    import duckdb
    import pandas as pd

    psutil = needs["psutil_or_exit"]("bench/features.py")
    sizes = sorted(set(args.events))
    root = args.data_dir or Path(tempfile.mkdtemp(prefix="dynseg-bench-data-"))
    meta = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "duckdb": duckdb.__version__, "pandas": pd.__version__,
            "as_of": END.isoformat(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()], "started": datetime.now().isoformat()}
    rows: list[dict] = []
    pandas_rss_per_event: float | None = None
    try:
        for n in sizes:
            t = time.perf_counter()
            data = ensure_data(n, root)
            print(f"{size_label(n)} events: data ready in {time.perf_counter() - t:.1f}s "
                  f"({data['events'].stat().st_size / 2**20:.0f} MB events.parquet)", file=sys.stderr)
            size_rows = {}
            for variant in args.variants:
                repeats = args.repeats or (1 if variant == "pandas" and n > 10_000_000 else 3)
                limit = args.max_rss_gb * 1e9
                if variant == "pandas" and pandas_rss_per_event and pandas_rss_per_event * n > limit:
                    size_rows[variant] = {"variant": variant, "events": n, "customers": n // EVENTS_PER_CUSTOMER,
                                          "skipped": f"projected peak RSS {pandas_rss_per_event * n / 1e9:.0f} GB "
                                                     f"> {args.max_rss_gb:.0f} GB"}
                    continue
                result = measure(variant, data["events"].parent, n, repeats, limit)
                if "skipped" in result:
                    size_rows[variant] = result | {"events": n, "customers": n // EVENTS_PER_CUSTOMER}
                    continue
                size_rows[variant] = summarise(result, n)
                if variant == "pandas":
                    pandas_rss_per_event = result["peak_rss_bytes"] / n
                s = size_rows[variant]
                print(f"  {variant}: {s['seconds']:.2f}s median of {s['runs']} ("
                      + ", ".join(f"{x:.2f}" for x in s["all_seconds"]) + "), peak RSS median "
                      f"{s['peak_rss_bytes'] / 1e9:.2f} GB ("
                      + ", ".join(f"{x / 1e9:.2f}" for x in s["peak_rss_bytes_all"]) + "; GB = 10^9 bytes)", file=sys.stderr)
            d, f, p, sp = (size_rows.get(v) for v in ("dynseg", "floor", "pandas", "spark"))
            ok = lambda r: r is not None and "skipped" not in r  # noqa: E731
            if ok(d) and ok(f):
                d["vs_floor"] = d["seconds"] / f["seconds"]
                f["vs_floor"] = 1.0
            if ok(sp) and ok(f):
                sp["vs_floor"] = sp["seconds"] / f["seconds"]
            if ok(sp) and ok(d):
                sp["spark_over_dynseg"] = sp["seconds"] / d["seconds"]
            if ok(d) and ok(p):
                p["pandas_over_dynseg"] = p["seconds"] / d["seconds"]
                if ok(f):
                    p["vs_floor"] = p["seconds"] / f["seconds"]
            rows += size_rows.values()
    finally:
        if args.data_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    print_table(rows, meta)
    goal = targets(rows)
    if goal:
        from rich.console import Console

        at = size_label(goal["events"])
        Console(width=180).print(f"targets at {at} events" + ("" if goal["events"] == 50_000_000 else
                                                               " (they are set for 50M; indicative only)") + ": " + ", ".join(
            f"{k}: {_goal_value(k, v)} {'[green]ok[/]' if passed else '[red]missed[/]'}"
            for k, (v, passed) in ((k, x) for k, x in goal.items() if k != "events")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows, "targets": goal}, indent=2, default=str))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
