"""An independent plain-pandas implementation of the ``customer_features`` feature set.

Written from the column spec (``features/customer_features.md``), not from the Ibis code: it is
the test oracle for the DuckDB and Spark engines (``tests/features/test_parity.py``) and the
baseline of the benchmark (``bench/features.py``). Vectorised groupby/agg throughout, no SQL,
no per-customer Python loops.

Input ``events`` has the canonical columns (``customer_id``, ``role``, ``ts`` as naive UTC
timestamps, ``amount``, ``category``, ...); ``customers`` the canonical profile columns
(``customer_id``, ``signup_at``, ``email_consent``, ``consent_updated_at`` + attributes) or is None.

Spec points that are easy to get wrong (each pinned by a case in the parity test):

- ``email_consent``: when the profile's ``consent_updated_at`` equals the latest consent event's
  time, consent holds only if both give it.
- ``monetary_mean`` is ``monetary_total / frequency`` with ``monetary_total`` 0 when no amount is
  known, so purchases without amounts give 0.0, not null.
- ``open_rate`` / ``click_to_open_90d`` are 0.0 (not null) with sends / opens but no opens / clicks.
- ``purchase_trend_30d`` is part of the rhythm group whatever ``windows_days`` says.

- ``email_consent``: when consent events tie on the latest timestamp, a withdrawal or
  unsubscribe wins over a grant.
"""

from __future__ import annotations

if __name__ == "__main__":  # a module: run as a script, bench/features.py would shadow the features package
    raise SystemExit("bench/pandas_features.py is the pandas baseline's module, not a script: "
                     "run `.venv/bin/python bench/features.py --variants pandas` to measure it")

from datetime import datetime

import numpy as np
import pandas as pd

from features.customer_features import DataProfile, FeatureSpec

DAY = pd.Timedelta(days=1)
CONSENT_ROLES = ("consent_granted", "consent_withdrawn", "unsubscribe")
FLAGS = (("unsubscribe", "unsubscribed"), ("bounce", "bounced"), ("complaint", "complained"))


def _utc_naive(as_of: datetime) -> pd.Timestamp:
    t = pd.Timestamp(as_of)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def _days(t: pd.Timestamp, ts: pd.Series) -> pd.Series:
    """Fractional days from ``ts`` to ``t`` (NaN where ts is missing)."""
    return (t - ts) / DAY


def _ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den as float, NaN where den is 0 or missing."""
    den = den.astype("float64")
    return (num.astype("float64") / den).where(den > 0)


def pandas_customer_features(
    events: pd.DataFrame,
    customers: pd.DataFrame | None,
    as_of: datetime,
    spec: FeatureSpec,
    profile: DataProfile,
) -> pd.DataFrame:
    """One row per customer known at ``as_of``; columns as in ``customer_features.md``."""
    T = _utc_naive(as_of)
    roles = profile.roles
    groups = set(profile.groups())
    has_purchase = "purchase" in roles

    # --- point in time: events strictly before T, profiles signed up before T
    ev = events.loc[events["ts"] < T, ["customer_id", "role", "ts", "amount", "category"]]
    if customers is not None:
        signup = customers["signup_at"] if "signup_at" in customers else pd.Series(pd.NaT, index=customers.index)
        signed_up = customers.loc[signup < T, "customer_id"] if profile.has_signup else customers["customer_id"].iloc[:0]
    else:
        signed_up = pd.Series([], dtype=events["customer_id"].dtype)

    # population: anyone with a visible event or a visible signup; one integer code per customer
    population = pd.Index(pd.concat([ev["customer_id"], signed_up], ignore_index=True).unique(), name="customer_id")
    key = pd.Categorical(ev["customer_id"], categories=population)
    ev = ev.assign(key=key, role=ev["role"].astype("category"))
    n = len(population)

    def grouped(frame: pd.DataFrame):
        return frame.groupby("key", observed=False, sort=True)

    def count(frame: pd.DataFrame) -> pd.Series:
        return grouped(frame).size().astype("int64")

    def by_role(role: str) -> pd.DataFrame:
        return ev[ev["role"] == role]

    g_all = grouped(ev)
    out: dict[str, pd.Series | np.ndarray] = {}
    out["n_events"] = g_all.size().astype("int64")
    first_event_at = g_all["ts"].min()
    last_event_at = g_all["ts"].max()
    out["days_since_last_event"] = _days(T, last_event_at)
    actions = ev[~ev["role"].isin(["email_send", "bounce"])]  # the customer's own doing
    out["days_since_last_action"] = _days(T, grouped(actions)["ts"].max())

    # --- rfm
    purchases = by_role("purchase")
    # a purchase's category however it is spelt (' Shoes', 'shoes'), stripped as Ibis strips; a blank
    # one is none (only purchases are read for categories, so only theirs are normalised)
    spelt = (purchases["category"].astype("string").str.strip(" \t\n\r\x0b\x0c").str.lower()
             .str.translate({0x3C2: "\u03c3", 0x307: None}))  # as features.customer_features.LOWER_FOLD
    purchases = purchases.assign(category=spelt.mask(spelt.eq("")))
    gp = grouped(purchases)
    frequency = gp.size().astype("int64")
    first_purchase_at, last_purchase_at = gp["ts"].min(), gp["ts"].max()
    monetary_total = gp["amount"].sum(min_count=1).fillna(0.0)
    if "rfm" in groups:
        out["recency_days"] = _days(T, last_purchase_at)
        out["frequency"] = frequency
        out["monetary_total"] = monetary_total
        out["monetary_mean"] = _ratio(monetary_total, frequency)
        out["monetary_max"] = gp["amount"].max()
        out["days_since_first_purchase"] = _days(T, first_purchase_at)
        if "categories" in groups:
            out["n_categories"] = gp["category"].nunique().astype("int64")

    # --- windows: events of each role in [T - w days, T)
    window_roles = [r for r in spec.window_roles if r in roles]
    for w in spec.windows_days:
        recent = ev[ev["ts"] >= T - pd.Timedelta(days=w)]
        # (customer x window role) counts in one groupby: both keys categorical, so every
        # customer and every role gets a cell (0 when nothing happened)
        wrole = recent["role"].cat.set_categories(window_roles)
        counts = recent.groupby([recent["key"], wrole], observed=False).size().unstack()
        for role in window_roles:
            out[f"n_{role}_{w}d"] = counts[role].astype("int64")
        if has_purchase:
            rp = grouped(purchases[purchases["ts"] >= T - pd.Timedelta(days=w)])  # (the normalised categories)
            out[f"spend_{w}d"] = rp["amount"].sum(min_count=1).fillna(0.0)
            if "categories" in groups:
                out[f"n_categories_{w}d"] = rp["category"].nunique().astype("int64")

    # --- rhythm
    if "rhythm" in groups:
        mean_gap = ((last_purchase_at - first_purchase_at) / DAY / (frequency - 1).astype("float64")).where(frequency >= 2)
        ordered = purchases.sort_values(["key", "ts"], kind="stable")
        gap = ordered["ts"] - ordered.groupby("key", observed=False)["ts"].shift()
        std_gap = (gap / DAY).groupby(ordered["key"], observed=False).std(ddof=1)
        out["mean_gap_days"] = mean_gap
        out["std_gap_days"] = std_gap.where(frequency >= 3)
        out["recency_over_mean_gap"] = _ratio(_days(T, last_purchase_at), mean_gap)
        out["purchase_trend_30d"] = (_between(purchases, T, 30, 0, count) + 1) / (_between(purchases, T, 60, 30, count) + 1)

    # --- engagement
    if "engagement" in groups:
        sends, opens, clicks = by_role("email_send"), by_role("email_open"), by_role("email_click")
        n_send, n_open, n_click = count(sends), count(opens), count(clicks)
        last_open_at = grouped(opens)["ts"].max()
        # each column only with the roles it reads
        engagement = (
            ("n_email_send", ("email_send",), lambda: n_send),
            ("n_email_open", ("email_open",), lambda: n_open),
            ("n_email_click", ("email_click",), lambda: n_click),
            ("open_rate", ("email_send", "email_open"), lambda: _ratio(n_open, n_send)),
            ("click_to_open_90d", ("email_open", "email_click"),
             lambda: _ratio(_between(clicks, T, 90, 0, count), _between(opens, T, 90, 0, count))),
            ("days_since_last_open", ("email_open",), lambda: _days(T, last_open_at)),
            ("days_since_last_click", ("email_click",), lambda: _days(T, grouped(clicks)["ts"].max())),
            ("open_trend_30d", ("email_open",),
             lambda: (_between(opens, T, 30, 0, count) + 1) / (_between(opens, T, 60, 30, count) + 1)),
        )
        for name, needs, value in engagement:
            if roles.issuperset(needs):
                out[name] = value()
        if roles.issuperset(("email_send", "email_open")):
            # each send against its customer's latest open (by integer code, not a join)
            last_open_of_send = last_open_at.to_numpy()[sends["key"].cat.codes.to_numpy()]
            after = pd.isna(last_open_of_send) | (sends["ts"].to_numpy() > last_open_of_send)
            out["sends_since_last_open"] = count(sends[after])

    # --- refunds, support, suppression
    if "refunds" in groups:
        refunds = by_role("refund")
        n_refund = count(refunds)
        out["n_refund"] = n_refund
        out["refund_amount"] = grouped(refunds.assign(amount=refunds["amount"].abs()))["amount"].sum(min_count=1).fillna(0.0)
        out["refund_rate"] = _ratio(n_refund, frequency)
    if "support" in groups:
        tickets = by_role("support_ticket")
        out["n_support_ticket"] = count(tickets)
        out["n_support_ticket_90d"] = _between(tickets, T, 90, 0, count)
    for role, name in FLAGS:
        if role in roles:
            out[name] = count(by_role(role)) > 0

    # --- profile-based columns
    prof = _profile(customers, population)
    signup_known = prof["signup_at"].where(prof["signup_at"] < T)
    first_seen = first_event_at
    if "tenure" in groups:
        out["days_since_signup"] = _days(T, signup_known)
        both = pd.DataFrame({"event": first_event_at.to_numpy(), "signup": signup_known.to_numpy()})
        first_seen = both.min(axis=1, skipna=True)
    out["tenure_days"] = _days(T, first_seen)
    if "consent" in groups:
        out["email_consent"] = _consent(ev, prof, T, profile, grouped)
    if "unsubscribed" in out:  # undone by consent given after the latest unsubscribe
        out["unsubscribed"] = out["unsubscribed"].to_numpy(dtype=bool) & ~out["email_consent"].fillna(False).to_numpy(dtype=bool)
    for attr in profile.categorical:
        out[attr] = prof[attr]

    # --- assemble: every series is indexed by the population (categorical groupby, observed=False)
    frame = pd.DataFrame({name: _values(s, n) for name, s in out.items()})
    frame.insert(0, "customer_id", population.to_numpy())
    frame.insert(1, "as_of", pd.Series(T, index=frame.index).astype("datetime64[us]"))
    return frame


def _between(frame: pd.DataFrame, T: pd.Timestamp, from_days: int, to_days: int, count) -> pd.Series:
    """Count of ``frame`` rows with ``T - from_days <= ts < T - to_days`` per customer."""
    ts = frame["ts"]
    return count(frame[(ts >= T - pd.Timedelta(days=from_days)) & (ts < T - pd.Timedelta(days=to_days))])


def _values(s, n: int):
    s = s.to_numpy() if isinstance(s, pd.Series) else s
    assert len(s) == n, (len(s), n)
    return s


def _profile(customers: pd.DataFrame | None, population: pd.Index) -> pd.DataFrame:
    """The customers' profile rows aligned to the population (missing profile -> nulls)."""
    cols = ["signup_at", "email_consent", "consent_updated_at"]
    if customers is None:
        prof = pd.DataFrame(index=population)
        prof["signup_at"] = pd.Series(pd.NaT, index=population, dtype="datetime64[us]")
        prof["consent_updated_at"] = prof["signup_at"]
        prof["email_consent"] = pd.Series(pd.NA, index=population, dtype="boolean")
        return prof
    prof = customers.set_index("customer_id").reindex(population)
    for c in cols:
        if c not in prof:
            prof[c] = pd.NaT if c != "email_consent" else pd.NA
    return prof


def _consent(ev: pd.DataFrame, prof: pd.DataFrame, T: pd.Timestamp, profile: DataProfile, grouped) -> pd.Series:
    """Latest consent decision known before T, from consent events and/or the profile."""
    index = prof.index
    result = pd.Series(pd.NA, index=index, dtype="boolean")
    event_at = pd.Series(pd.NaT, index=index, dtype="datetime64[us]")
    if profile.roles & set(CONSENT_ROLES):
        c = ev[ev["role"].isin(CONSENT_ROLES)]
        latest = grouped(c)["ts"].max()
        at_latest = c[c["ts"].to_numpy() == latest.to_numpy()[c["key"].cat.codes.to_numpy()]]
        granted = (at_latest["role"] == "consent_granted").astype("float64")
        # a tie between a grant and a withdrawal at the same instant: the withdrawal wins
        decision = granted.groupby(at_latest["key"], observed=False).min()
        result = pd.Series(decision.to_numpy(), index=index).map({1.0: True, 0.0: False}).astype("boolean")
        event_at = pd.Series(latest.to_numpy(), index=index)
    if profile.has_consent_profile:
        updated = prof["consent_updated_at"]
        known = ((updated < T) & prof["email_consent"].notna()).to_numpy()  # no value: no decision
        # the profile applies when known before T and not older than the latest consent event
        use_profile = known & ~(event_at.notna().to_numpy() & (event_at > updated).to_numpy())
        tie = known & (event_at == updated).to_numpy()  # at the same instant: consent only if both give it
        own = prof["email_consent"].astype("boolean")
        result = result.where(~use_profile, own.where(~tie, own & result))
    return result
