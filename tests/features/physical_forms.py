"""Physical forms: one logical log, any form of its files, the same features.

A random small logical log (a few customers, 2-14 roles with 1-2 event names each, events around a
random cutoff T and exactly at, just before and just after it, exact repeats, consent ties,
profiles with and without signup and consent, identity links that merge customers) is written
once canonically (Parquet, naive microsecond timestamps) and in random physical forms: Parquet,
CSV or DuckDB (a schema, a view); one file or a glob of 2-3; CSV delimiters `, ; | tab` and
encodings utf-8, latin-1, utf-16; timestamps naive or zoned (9 time zones), in µs or ns, or as text
in 8 spellings (offsets such as +05:45 and -03:30); booleans as booleans, integers or words;
numeric customer ids as integers; contract columns mapped from other names, with decoy columns
bearing the contract's names. ``dynseg features build`` (in this process, through the CLI) must give
the canonical build's frame from every form, and the canonical build must equal the pandas oracle
(``bench/pandas_features.py``) applied to the logical log with an independent identity merge, and
keep the feature set's rules (``feature_rules.py``).

The suite runs a few seeds (tests/features/test_physical_forms.py); at scale:

    .venv/bin/python tests/features/physical_forms.py 400 40 --variants 3 [--spark]

``--spark`` also builds each canonical log with ``--engine spark``: its frame must have the DuckDB
build's columns and dtypes, and its values to 1e-12 relative. ``--later`` checks time instead of
forms: each log built from its events before T and again with random events at and after T added
(roles it never had before T among them) must give the same frame (:func:`check_later_events`).
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from features.customer_features import DataProfile, FeatureSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_rules import violations  # noqa: E402
from test_parity import assert_same_frame, pandas_customer_features  # noqa: E402  (the oracle, as it loads it)

REPO = Path(__file__).resolve().parents[2]
ROLES = ("purchase", "refund", "email_send", "email_open", "email_click", "page_view", "add_to_cart",
         "unsubscribe", "bounce", "complaint", "support_ticket", "signup", "consent_granted", "consent_withdrawn")
ZONES = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Pacific/Kiritimati",
         "Pacific/Pago_Pago", "UTC", "Australia/Adelaide", "America/St_Johns"]
OFFSETS = [0, 60, 120, -300, 330, 345, 840, -720, -210, 570, 30]  # minutes


# ----------------------------------------------------------------------------- logical log
def logical(seed: int, T: pd.Timestamp | None = None, numeric_ids: bool | None = None) -> dict:
    """The seed's logical log: ``T``, ``events``, ``customers``, ``identities`` (or None), the role
    ``names``, ``ignored`` event names, ``numeric_ids``. Even seeds give profiles typed attributes
    (``kids``, ``vip``), which ``auto`` never takes as categories."""
    rng = random.Random(seed)
    if T is None:
        T = pd.Timestamp("2026-06-01 10:00:00") + pd.Timedelta(days=rng.randint(-30, 30))
        k = rng.random()
        if k < 0.3:
            T = T.normalize()  # midnight: a date as_of
        elif k < 0.6:
            T = T + pd.Timedelta(microseconds=rng.randint(0, 10**6 - 1), seconds=rng.randint(0, 3599))
    if numeric_ids is None:
        numeric_ids = rng.random() < 0.25
    n_c = rng.randint(2, 7)
    if numeric_ids:
        ids = [str(x) for x in rng.sample(range(1, 400), n_c)]
    else:
        ids = [f"c{rng.randint(0, 999):03d}" for _ in range(n_c)]
        ids = sorted(set(ids))
    roles = rng.sample(ROLES, rng.randint(2, len(ROLES)))
    if rng.random() < 0.7 and "purchase" not in roles:
        roles.append("purchase")
    names = {}
    pool = ["ev", "x", "Bestellung_ö", "evt.", "E", "event-"]
    for r in roles:
        names[r] = [f"{rng.choice(pool)}{r}{i}" for i in range(rng.randint(1, 2))]
    ignored = [f"ignored_{i}" for i in range(rng.randint(0, 2))]

    def rand_ts(lo_days=-120, hi_days=20):
        t = T + pd.Timedelta(seconds=rng.randint(lo_days * 86400, hi_days * 86400))
        k = rng.random()
        if k < 0.15:
            t = t.normalize()
        elif k < 0.5:
            t = t + pd.Timedelta(microseconds=rng.randint(0, 999999))
        elif k < 0.6:
            t = t + pd.Timedelta(milliseconds=rng.randint(0, 999))
        return t

    rows = []
    cats = ["shoes", "toys", "Küche", None, "a,b"]
    for i in range(rng.randint(8, 50)):
        c = rng.choice(ids)
        if rng.random() < 0.08 and ignored:
            name, role = rng.choice(ignored), None
        else:
            role = rng.choice(roles)
            name = rng.choice(names[role])
        amt = None
        if role == "purchase":
            amt = rng.choice([None, round(rng.uniform(0, 300), 2), float(rng.randint(1, 99))]) if rng.random() < 0.95 else None
        elif role == "refund":
            amt = rng.choice([round(rng.uniform(1, 50), 2), -round(rng.uniform(1, 50), 2), None])
        cat = rng.choice(cats) if role in ("purchase", "refund", "page_view") else None
        rows.append(dict(customer_id=c, event_type=name, ts=rand_ts(), amount=amt, category=cat,
                         channel=rng.choice(["web", "app", None])))
    # boundary events
    for delta in (pd.Timedelta(0), -pd.Timedelta(microseconds=1), pd.Timedelta(microseconds=1)):
        if rng.random() < 0.8:
            role = rng.choice(roles)
            rows.append(dict(customer_id=rng.choice(ids), event_type=rng.choice(names[role]), ts=T + delta,
                             amount=10.0 if role == "purchase" else None, category=None, channel="web"))
    # ties among consent events sometimes
    if "consent_granted" in roles and rng.random() < 0.4:
        c, t = rng.choice(ids), rand_ts(-60, 0)
        rows.append(dict(customer_id=c, event_type=names["consent_granted"][0], ts=t, amount=None, category=None, channel=None))
        other = rng.choice([r for r in ("consent_withdrawn", "unsubscribe") if r in roles] or ["consent_granted"])
        rows.append(dict(customer_id=c, event_type=names[other][0], ts=t, amount=None, category=None, channel=None))
    ev = pd.DataFrame(rows)
    ev["event_id"] = [f"e{i:04d}" for i in range(len(ev))]
    if rng.random() < 0.3:  # exact repeats
        ev = pd.concat([ev, ev.sample(min(3, len(ev)), random_state=seed)], ignore_index=True)
    ev["ts"] = ev["ts"].astype("datetime64[us]")
    ev = ev.sample(frac=1, random_state=seed).reset_index(drop=True)

    # customers
    prof_ids = [c for c in ids if rng.random() < 0.85] or ids[:1]
    extra_ids = [f"p{rng.randint(0, 99)}" if not numeric_ids else str(rng.randint(500, 600)) for _ in range(rng.randint(0, 2))]
    prof_ids = sorted(set(prof_ids + extra_ids))
    has_signup = rng.random() < 0.75
    has_consent = rng.random() < 0.7
    crow = []
    for c in prof_ids:
        r = dict(customer_id=c)
        if has_signup:
            r["signup_at"] = rand_ts(-400, 15) if rng.random() < 0.85 else None
        if has_consent:
            if rng.random() < 0.8:
                r["email_consent"] = rng.random() < 0.6
                r["consent_updated_at"] = rand_ts(-90, 10)
            else:
                r["email_consent"], r["consent_updated_at"] = None, None
        r["country"] = rng.choice(["DE", "FR", "ÅL", None])
        r["plan"] = rng.choice(["free", "pro"])
        if seed % 2 == 0:  # typed attributes: never categorical by auto, whatever the file's form
            r["kids"] = rng.choice([0, 1, 2, 3, None])
            r["vip"] = rng.choice([True, False, None])
        crow.append(r)
    cu = pd.DataFrame(crow)
    for col in ("signup_at", "consent_updated_at"):
        if col in cu:
            cu[col] = pd.to_datetime(cu[col]).astype("datetime64[us]")
    if "email_consent" in cu:
        cu["email_consent"] = cu["email_consent"].astype("boolean")

    # identities
    idn = None
    if rng.random() < 0.6:
        all_ids = sorted(set(ids) | set(prof_ids))
        links = []
        for c in all_ids:
            links.append((c, "email", f"{c}@x.org"))
        for _ in range(rng.randint(1, 3)):
            a, b = rng.sample(all_ids, 2)
            v = f"shared{rng.randint(0, 9)}"
            typ = rng.choice(["email", "device"])
            links += [(a, typ, v), (b, typ, v)]
        if rng.random() < 0.3:  # an id that appears only in identities
            ghost = "a0" if not numeric_ids else "0"
            links += [(ghost, "device", "dev1"), (rng.choice(all_ids), "device", "dev1")]
        idn = pd.DataFrame(links, columns=["customer_id", "id_type", "id_value"])
        idn = idn.drop_duplicates().reset_index(drop=True)
    return dict(T=T, events=ev, customers=cu, identities=idn, names=names, ignored=ignored,
                numeric_ids=numeric_ids, seed=seed)


# ----------------------------------------------------------------------------- identity oracle
def components(idn: pd.DataFrame | None, max_ids: int = 20, rank: dict[str, int] | None = None) -> dict[str, str]:
    """Id -> its canonical id (the smallest of its merged group among its ids of the best ``rank``:
    0 with a profile, 1 without), by union-find over shared identifiers; an identifier shared by
    more than ``max_ids`` ids merges nothing."""
    rank = rank or {}
    if idn is None or idn.empty:
        return {}
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (t, v), g in idn.groupby(["id_type", "id_value"]):
        cs = sorted(set(g.customer_id.astype(str)))
        if len(cs) < 2 or len(cs) > max_ids:
            continue
        for c in cs:
            find(c)
        for c in cs[1:]:
            ra, rb = find(cs[0]), find(c)
            if ra != rb:
                parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    out = {}
    for members in groups.values():
        canon = min(members, key=lambda m: (rank.get(m, 1), m))
        for m in members:
            out[m] = canon
    return out


def oracle(L: dict, T: pd.Timestamp, spec: FeatureSpec = FeatureSpec()) -> pd.DataFrame:
    """The features the logical log ``L`` should give as of ``T``: exact repeats dropped, ids merged,
    merged profiles combined as the data contract says, then the pandas oracle."""
    role_of = {n: r for r, ns in L["names"].items() for n in ns}
    ev = L["events"].drop_duplicates()
    ev = ev[ev.event_type.isin(role_of)].copy()
    known = {str(c): 0 for c in L["customers"].customer_id.dropna()}
    canon = components(L["identities"], rank=known)
    merged = any(k != v for k, v in canon.items())
    ev["role"] = ev.event_type.map(role_of)
    ev["customer_id"] = ev.customer_id.map(lambda c: canon.get(c, c))
    ev["amount"] = ev["amount"].astype("float64")
    ev["category"] = ev["category"].astype("string")
    cu = L["customers"].copy()
    attrs = [c for c in cu.columns if c not in ("customer_id", "signup_at", "email_consent", "consent_updated_at")]
    if "signup_at" not in cu:
        cu["signup_at"] = pd.Series(pd.NaT, index=cu.index, dtype="datetime64[us]")
    if "email_consent" not in cu:
        cu["email_consent"] = pd.array([pd.NA] * len(cu), dtype="boolean")
        cu["consent_updated_at"] = pd.Series(pd.NaT, index=cu.index, dtype="datetime64[us]")
    # what `features build` measures before T (data_profile's `before`): a signup, a consent
    # decision of any profile row, a role's first event
    has_signup = (cu.signup_at < T).any()
    has_consent = (cu.email_consent.notna() & (cu.consent_updated_at < T)).any()
    if merged:
        cu["cid"] = cu.customer_id.map(lambda c: canon.get(c, c))
        rows = []
        for cid, g in cu.groupby("cid"):
            # as of T: among the rows whose profile existed (signed up before T, or no signup time), if any
            existed = g[g.signup_at.isna() | (g.signup_at < T)]
            pool = existed if len(existed) else g
            own = pool[pool.customer_id == cid]
            src = own.iloc[0] if len(own) else pool.sort_values("customer_id").iloc[0]  # the smallest linked id's row
            r = {"customer_id": cid, "signup_at": g.signup_at.min()}
            for a in attrs:
                r[a] = src[a]
            dec = g[g.email_consent.notna() & g.consent_updated_at.notna() & (g.consent_updated_at < T)]
            if len(dec):
                latest = dec.consent_updated_at.max()
                at = dec[dec.consent_updated_at == latest]
                r["email_consent"], r["consent_updated_at"] = bool(at.email_consent.all()), latest
            else:
                r["email_consent"], r["consent_updated_at"] = pd.NA, pd.NaT
            rows.append(r)
        cuT = pd.DataFrame(rows)
        cuT["signup_at"] = pd.to_datetime(cuT["signup_at"]).astype("datetime64[us]")
        cuT["consent_updated_at"] = pd.to_datetime(cuT["consent_updated_at"]).astype("datetime64[us]")
        cuT["email_consent"] = cuT["email_consent"].astype("boolean")
    else:
        cuT = cu
    present_roles = frozenset(ev.role[ev.ts < T])
    cat = tuple(a for a in attrs if a not in ("kids", "vip") and 0 < cuT[a].nunique() <= 50) if len(attrs) else ()
    profile = DataProfile(present_roles, bool(has_signup), bool(has_consent), cat)
    out = pandas_customer_features(ev[["customer_id", "role", "ts", "amount", "category"]], cuT, T.to_pydatetime(), spec, profile)
    return out


# ----------------------------------------------------------------------------- physical forms
def ts_text(t: pd.Timestamp, style: str, rng: random.Random) -> str | None:
    """The instant ``t`` (UTC) as text in ``style``; an offset style shifts the local time to match."""
    if pd.isna(t):
        return None
    if style == "mixed":
        style = rng.choice(["naive", "T", "Z", "offset", "offset_compact", "offset_hour", "date"])
    if style == "date":
        if t == t.normalize():
            return t.strftime("%Y-%m-%d")
        style = "naive"
    frac = lambda x: ("." + f"{x.microsecond:06d}".rstrip("0")) if x.microsecond else ""  # noqa: E731
    if style == "naive":
        return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{t.microsecond:06d}" if t.microsecond else "")
    if style == "T":
        return t.strftime("%Y-%m-%dT%H:%M:%S") + frac(t)
    if style == "Z":
        return t.strftime("%Y-%m-%dT%H:%M:%S") + frac(t) + "Z"
    if style in ("offset", "offset_compact", "offset_hour"):
        offs = [o for o in OFFSETS if o % 60 == 0] if style == "offset_hour" else OFFSETS
        m = rng.choice(offs)
        local = t + pd.Timedelta(minutes=m)
        sign = "+" if m >= 0 else "-"
        hh, mm = divmod(abs(m), 60)
        off = {"offset": f"{sign}{hh:02d}:{mm:02d}", "offset_compact": f"{sign}{hh:02d}{mm:02d}",
               "offset_hour": f"{sign}{hh:02d}"}[style]
        return local.strftime("%Y-%m-%dT%H:%M:%S") + frac(local) + off
    raise ValueError(style)


def physical_ts(s: pd.Series, form: str, rng: random.Random):
    """form: naive_us | naive_ns | naive_ms | tz_us | tz_ns | text_<style>"""
    s = pd.to_datetime(s).astype("datetime64[us]")
    if form == "naive_us":
        return s
    if form == "naive_ns":
        return s.astype("datetime64[ns]")
    if form == "tz_us":
        return s.dt.tz_localize("UTC").dt.tz_convert(rng.choice(ZONES))
    if form == "tz_ns":
        return s.astype("datetime64[ns]").dt.tz_localize("UTC").dt.tz_convert(rng.choice(ZONES))
    if form.startswith("text_"):
        return pd.Series([ts_text(t, form[5:], rng) for t in s], index=s.index, dtype=object)
    raise ValueError(form)


TS_COLS = {"events": ["ts"], "customers": ["signup_at", "consent_updated_at"], "identities": []}


def write_source(root: Path, name: str, df: pd.DataFrame, form: dict, rng: random.Random) -> dict:
    """Write ``df`` (logical) in ``form``; returns the catalog spec."""
    fmt = form["format"]
    df = df.copy()
    # timestamps
    for c in TS_COLS[name]:
        if c in df:
            df[c] = physical_ts(df[c], form.get("ts", "naive_us"), rng)
    if name == "customers" and "email_consent" in df:
        bf = form.get("bool", "bool")
        if bf == "int":
            df["email_consent"] = df["email_consent"].astype("Int64")
        elif bf.startswith("text"):
            spell = rng.choice([("true", "false"), ("yes", "no"), ("Y", "N"), ("1", "0"), ("TRUE", "False"), ("t", "f")])
            df["email_consent"] = [None if pd.isna(v) else spell[0] if v else spell[1] for v in df["email_consent"]]
    if form.get("int_ids") and name in ("events", "customers", "identities"):
        df["customer_id"] = df["customer_id"].astype("int64")
    # renames
    mapping = {}
    for c in list(df.columns):
        if c in form.get("rename", ()):
            new = rng.choice([f"src_{c}", f"{c.upper()}X", f"My {c}", f"{c}_col"])
            mapping[c] = new
    df = df.rename(columns=mapping)
    for c in form.get("decoy", ()):  # a column bearing the contract name, overridden by the mapping
        if c in mapping:
            df[c] = "garbage"
    if name != "customers":
        df["extra_col"] = "zz"
    df = df[rng.sample(list(df.columns), len(df.columns))]
    spec = {"format": fmt}
    if mapping:
        spec["columns"] = {k: v for k, v in mapping.items()}
    nfiles = form.get("files", 1)
    d = root / "data"
    d.mkdir(exist_ok=True, parents=True)
    if fmt in ("parquet", "csv") and nfiles > 1:
        shuffled = df.sample(frac=1, random_state=rng.randint(0, 10**6))
        cuts = np.array_split(np.arange(len(shuffled)), nfiles)
        parts = [shuffled.iloc[c] for c in cuts]
        parts = [p for p in parts if len(p)] or [df]
        for i, p in enumerate(parts):
            _write_one(d / f"{name}-{i}.{fmt}", p, fmt, form)
        spec["path"] = f"data/{name}-*.{fmt}"
    elif fmt == "duckdb":
        dbf = d / f"{name}.duckdb"
        con = duckdb.connect(str(dbf))
        con.execute("SET TimeZone='UTC'")
        con.register("df_", df)
        schema = form.get("schema")
        tname = f"{schema}.{name}_tbl" if schema else f"{name}_tbl"
        if schema:
            con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"CREATE TABLE {tname} AS SELECT * FROM df_")
        if form.get("view"):
            con.execute(f"CREATE VIEW {name}_v AS SELECT * FROM {tname}")
            tname = f"{name}_v"
        con.close()
        spec["path"], spec["table"] = f"data/{name}.duckdb", tname
    else:
        _write_one(d / f"{name}.{fmt}", df, fmt, form)
        spec["path"] = f"data/{name}.{fmt}"
    if fmt == "csv":
        if form.get("delimiter", ",") != ",":
            spec["delimiter"] = form["delimiter"]
        if form.get("encoding", "utf-8") != "utf-8":
            spec["encoding"] = form["encoding"]
    return spec


def _write_one(path: Path, df: pd.DataFrame, fmt: str, form: dict) -> None:
    if fmt == "parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_csv(path, index=False, sep=form.get("delimiter", ","), encoding=form.get("encoding", "utf-8"))


def make_project(root: Path, L: dict, forms: dict, seed: int) -> None:
    """A project at ``root``: the repository's configs, the log's roles, its sources in ``forms``."""
    rng = random.Random(seed)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copytree(REPO / "configs", root / "configs", ignore=shutil.ignore_patterns("local"))
    proj = yaml.safe_load((root / "configs/project.yaml").read_text())
    proj["freshness"] = {"max_lag_days": 3, "action": "warn"}
    (root / "configs/project.yaml").write_text(yaml.safe_dump(proj))
    (root / "configs/roles.yaml").write_text(yaml.safe_dump(
        {"event_roles": {r: ns for r, ns in L["names"].items()}, "ignore": L["ignored"]}, allow_unicode=True))
    sources = {"events": write_source(root, "events", L["events"], forms["events"], rng)}
    sources["customers"] = write_source(root, "customers", L["customers"], forms["customers"], rng)
    if L["identities"] is not None:
        sources["identities"] = write_source(root, "identities", L["identities"], forms["identities"], rng)
    (root / "configs/catalog.yaml").write_text(yaml.safe_dump({"sources": sources}, allow_unicode=True))


CANONICAL = {"events": {"format": "parquet", "ts": "naive_us"}, "customers": {"format": "parquet", "ts": "naive_us"},
             "identities": {"format": "parquet"}}


def random_form(name: str, rng: random.Random, numeric_ids: bool) -> dict:
    """A random physical form for the source ``name``: what :func:`write_source` writes."""
    fmt = rng.choice(["parquet", "csv", "duckdb"])
    f = {"format": fmt}
    text_styles = ["text_naive", "text_T", "text_Z", "text_offset", "text_offset_compact", "text_offset_hour",
                   "text_date", "text_mixed", "text_mixed"]
    if fmt == "csv":
        f["ts"] = rng.choice(text_styles)
        f["delimiter"] = rng.choice([",", ";", "|", "\t"])
        f["encoding"] = rng.choice(["utf-8", "utf-8", "latin-1", "utf-16"])
        f["bool"] = "text"
    else:
        tsf = ["naive_us", "naive_ns", "tz_us", "tz_ns", *text_styles]
        f["ts"] = rng.choice(tsf)
        f["bool"] = rng.choice(["bool", "int", "text"])
        if numeric_ids and rng.random() < 0.5:
            f["int_ids"] = True
    if fmt == "duckdb":
        f["schema"] = rng.choice([None, None, "crm"])
        f["view"] = rng.random() < 0.2
    if fmt in ("parquet", "csv") and rng.random() < 0.4:
        f["files"] = rng.randint(2, 3)
    cols = {"events": ["customer_id", "event_type", "ts", "amount", "event_id", "category"],
            "customers": ["customer_id", "signup_at", "email_consent", "consent_updated_at", "country"],
            "identities": ["customer_id", "id_type", "id_value"]}[name]
    f["rename"] = [c for c in cols if rng.random() < 0.3]
    f["decoy"] = [c for c in f["rename"] if rng.random() < 0.5]
    return f


def as_of_spelling(T: pd.Timestamp, rng: random.Random) -> str:
    """``T`` as a user may give it: Z, naive, an offset, or (at midnight) the day before as a date."""
    opts = []
    frac = (f".{T.microsecond:06d}" if T.microsecond else "")
    opts.append(T.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z")
    opts.append(T.strftime("%Y-%m-%dT%H:%M:%S") + frac)
    m = rng.choice(OFFSETS)
    local = T + pd.Timedelta(minutes=m)
    sign = "+" if m >= 0 else "-"
    hh, mm = divmod(abs(m), 60)
    opts.append(local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{local.microsecond:06d}" if local.microsecond else "") + f"{sign}{hh:02d}:{mm:02d}")
    if T == T.normalize():
        opts.append((T - pd.Timedelta(days=1)).strftime("%Y-%m-%d"))
    return rng.choice(opts)


def build(root: Path, as_of: str, out: Path, engine: str = "duckdb") -> tuple[int, str]:
    """``dynseg --project ROOT features build --as-of AS_OF --out OUT --engine ENGINE`` in this
    process: (exit code, output)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    env = {"DYNSEG_WORKSPACE": None, "DYNSEG_PROFILE": None, "MLFLOW_TRACKING_URI": None, "DYNSEG_PROJECT": None}
    result = CliRunner().invoke(app, ["--project", str(root), "features", "build", "--as-of", as_of, "--out", str(out),
                                      "--engine", engine], env=env)
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


ATTRIBUTES = {"country", "plan", "kids", "vip"}


def assert_same_build(got: pd.DataFrame, expected: pd.DataFrame, rtol: float = 1e-9, atol: float = 1e-6) -> None:
    """:func:`test_parity.assert_same_frame`, the profile attributes taken in ``expected``'s order (a
    build lists them in the order of the customers file's columns, which the forms shuffle)."""
    fixed = [c for c in got.columns if c not in ATTRIBUTES]
    if fixed == [c for c in expected.columns if c not in ATTRIBUTES] and set(got.columns) == set(expected.columns):
        got = got[list(expected.columns)]
    assert_same_frame(got.assign(customer_id=got.customer_id.astype(str)),
                      expected.assign(customer_id=expected.customer_id.astype(str)), rtol, atol)


def check_seed(seed: int, work: Path, variants: int, spark: bool = False) -> list[str]:
    """Build the seed's log canonically and in ``variants`` random forms; what disagreed (empty if
    nothing). ``spark``: the canonical project is built on Spark too, and must give the DuckDB
    build's columns, dtypes and values."""
    log = logical(seed)
    rng = random.Random(seed * 7 + 1)
    T = log["T"]
    root = work / f"s{seed}"
    make_project(root, log, CANONICAL, seed)
    code, output = build(root, as_of_spelling(T, rng), root / "f.parquet")
    if code != 0:
        return [f"seed {seed}: the canonical build failed ({code}): {output[-800:]}"]
    base = pd.read_parquet(root / "f.parquet")
    problems = []
    try:
        assert_same_build(base, oracle(log, T))
    except AssertionError as e:
        problems.append(f"seed {seed}: the canonical build against the oracle: {e}")
    problems += [f"seed {seed}: the canonical build breaks a rule: {v}" for v in violations(base, T.to_pydatetime())]
    if spark:
        # its own spelling of T, from its own generator: the variants' forms stay as without --spark
        code, output = build(root, as_of_spelling(T, random.Random(seed * 7 + 2)), root / "spark.parquet", "spark")
        if code != 0:
            problems.append(f"seed {seed}: the Spark build failed ({code}): {output[-800:]}")
        else:
            on_spark = pd.read_parquet(root / "spark.parquet")
            try:
                pd.testing.assert_series_equal(on_spark.dtypes, base.dtypes)
                assert_same_build(on_spark, base, rtol=1e-12, atol=1e-9)
            except AssertionError as e:
                problems.append(f"seed {seed}: Spark against DuckDB: {e}")
    for v in range(variants):
        forms = {k: random_form(k, rng, log["numeric_ids"]) for k in ("events", "customers", "identities")}
        vroot = work / f"s{seed}_v{v}"
        make_project(vroot, log, forms, seed * 100 + v)
        code, output = build(vroot, as_of_spelling(T, rng), vroot / "f.parquet")
        if code != 0:
            problems.append(f"seed {seed} forms {forms}: the build failed ({code}): {output[-800:]}")
            continue
        try:
            assert_same_build(pd.read_parquet(vroot / "f.parquet"), base, rtol=1e-12, atol=1e-9)
        except AssertionError as e:
            problems.append(f"seed {seed} forms {forms}: against the canonical build: {e}")
    return problems


def check_later_events(seed: int, work: Path) -> list[str]:
    """The seed's log as of its T built twice through ``features build``: from its events before T,
    and from all of them plus 5-40 random events at and after T (known customers and a new one,
    any of the log's roles, some exactly at T). The two frames must be equal, columns included:
    nothing after T reaches a feature set. What disagreed (empty if nothing)."""
    log = logical(seed)
    T, rng = log["T"], random.Random(seed * 13 + 5)
    events = log["events"]
    ids = sorted(set(events.customer_id)) + ["zz_new"]
    later = []
    for i in range(rng.randint(5, 40)):
        role = rng.choice(list(log["names"]))
        ts = T if rng.random() < 0.2 else T + pd.Timedelta(microseconds=rng.randint(0, 90 * 86_400 * 10**6))
        later.append(dict(customer_id=rng.choice(ids), event_type=rng.choice(log["names"][role]), ts=ts,
                          amount=round(rng.uniform(1, 99), 2) if role in ("purchase", "refund") else None,
                          category=rng.choice(["shoes", None]), channel="web", event_id=f"later{i:04d}"))
    grown = pd.concat([events, pd.DataFrame(later)], ignore_index=True)
    grown["ts"] = grown["ts"].astype("datetime64[us]")
    frames, problems = {}, []
    for name, ev in (("before T", events[events.ts < T].reset_index(drop=True)), ("grown", grown)):
        root = work / f"s{seed}_{name.replace(' ', '_')}"
        make_project(root, dict(log, events=ev), CANONICAL, seed)
        code, output = build(root, as_of_spelling(T, random.Random(seed)), root / "f.parquet")
        if code != 0:
            problems.append(f"seed {seed}: the build from the log {name} failed ({code}): {output[-800:]}")
        else:
            frames[name] = pd.read_parquet(root / "f.parquet")
    if len(frames) == 2:
        grown_f, first = frames["grown"], frames["before T"]
        try:
            assert list(grown_f.columns) == list(first.columns), (
                f"columns differ: only with later events {[c for c in grown_f.columns if c not in first.columns]}, "
                f"only without {[c for c in first.columns if c not in grown_f.columns]}")
            pd.testing.assert_series_equal(grown_f.dtypes, first.dtypes)
            assert_same_build(grown_f, first, rtol=1e-12, atol=1e-12)
        except AssertionError as e:
            problems.append(f"seed {seed}: {len(later)} events at or after T changed the build: {e}")
    return problems


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Random logs in random physical forms: every build the same.")
    parser.add_argument("start", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--variants", type=int, default=3)
    parser.add_argument("--spark", action="store_true", help="also build each canonical log on Spark (about 10 s a log)")
    parser.add_argument("--later", action="store_true",
                        help="instead of the forms: each log from its events before T, and with random later events")
    args = parser.parse_args()
    failed = 0
    for seed in range(args.start, args.start + args.count):
        work = Path(tempfile.mkdtemp(prefix=f"forms-{seed}-"))
        found = check_later_events(seed, work) if args.later else check_seed(seed, work, args.variants, args.spark)
        failed += bool(found)
        print(f"seed {seed}: " + ("ok" if not found else "\n  ".join(["DISAGREE", *found])), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    builds = args.count * (2 if args.later else 1 + args.variants + args.spark)
    print(f"{args.count} logs, {builds} builds{' (one on Spark each)' if args.spark else ''}: {failed} logs with disagreements")
    sys.exit(1 if failed else 0)
