"""Rules every ``customer_features`` frame obeys, by the definitions in features/customer_features.md,
whatever the data: the dbt-style column tests of the feature set (not null, unique, accepted
ranges) and the relations between its columns (a 7-day count is at most the 30-day one, the mean
purchase is at most the largest, the last event is at most as old as the last purchase).

They hold independently of the pandas oracle: an engine and the oracle that agree on a wrong value
still break one of these. :func:`violations` lists what a frame breaks, with examples.
"""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd

from features.customer_features import FeatureSpec

EPS = 1e-9  # sums of amounts are added in whichever order the engine's threads finish
# the event counts with a total column of their own, by role (the windows' counts are at most it)
TOTALS = {"purchase": "frequency", "email_send": "n_email_send", "email_open": "n_email_open",
          "email_click": "n_email_click", "refund": "n_refund", "support_ticket": "n_support_ticket"}


def violations(frame: pd.DataFrame, as_of: datetime, spec: FeatureSpec = FeatureSpec()) -> list[str]:
    """What ``frame`` (the feature set as of ``as_of``) breaks of the rules; empty when nothing."""
    f = frame.reset_index(drop=True)
    out: list[str] = []

    def check(name: str, ok: pd.Series | np.ndarray) -> None:
        ok = pd.Series(ok, index=f.index)
        bad = f.index[~ok.fillna(False).astype(bool)]
        if len(bad):
            ids = f.loc[bad[:3], "customer_id"].tolist() if "customer_id" in f else list(bad[:3])
            out.append(f"{name}: {len(bad)} rows (e.g. {ids})")

    def has(*cols: str) -> bool:
        return all(c in f for c in cols)

    def num(col: str) -> pd.Series:
        return pd.to_numeric(f[col], errors="coerce").astype(float)

    def at_most(a: str, b: str, name: str) -> None:
        """Column a <= column b where both are known."""
        x, y = num(a), num(b)
        check(name, x.isna() | y.isna() | (x <= y + EPS * np.maximum(1, y.abs())))

    # keys: one row per customer, the cutoff on every row
    check("customer_id not null", f.customer_id.notna())
    check("customer_id unique", ~f.customer_id.duplicated(keep=False))
    check("as_of is the cutoff", pd.to_datetime(f.as_of) == pd.Timestamp(as_of))

    # counts: not null, whole, not negative
    counts = [c for c in f if re.fullmatch(r"n_[a-z_0-9]+|frequency|sends_since_last_open", c)]
    for c in counts:
        v = num(c)
        check(f"{c} is a count (not null, whole, >= 0)", v.notna() & (v >= 0) & (v == np.floor(v)))
        if c != "n_events" and "n_events" in f:
            at_most(c, "n_events", f"{c} <= n_events")
    # windows: each count at most the next longer window's and the role's total
    windows = sorted(spec.windows_days)
    for role in {*spec.window_roles, "categories"}:
        cols = [f"n_{role}_{w}d" for w in windows if f"n_{role}_{w}d" in f]
        for short, long in zip(cols, cols[1:]):
            at_most(short, long, f"{short} <= {long}")
        total = "n_categories" if role == "categories" else TOTALS.get(role)
        if cols and total in f:
            at_most(cols[-1], total, f"{cols[-1]} <= {total}")
    spend = [f"spend_{w}d" for w in windows if f"spend_{w}d" in f]
    for c in spend:
        check(f"{c} not null, >= 0", num(c).notna() & (num(c) >= -EPS))
    for short, long in zip(spend, spend[1:]):
        at_most(short, long, f"{short} <= {long}")
    if spend and "monetary_total" in f:
        at_most(spend[-1], "monetary_total", f"{spend[-1]} <= monetary_total")

    # times since: positive (every event seen is before T), known exactly when the thing happened
    for c in [c for c in f if c.startswith("days_since_") or c in ("recency_days", "tenure_days")]:
        check(f"{c} > 0 where known", num(c).isna() | (num(c) > 0))
    for days, count in (("days_since_last_event", "n_events"), ("recency_days", "frequency"),
                        ("days_since_first_purchase", "frequency"), ("days_since_last_open", "n_email_open"),
                        ("days_since_last_click", "n_email_click")):
        if has(days, count):
            check(f"{days} known iff {count} > 0", num(days).notna() == (num(count) > 0))
    for later in ("recency_days", "days_since_last_open", "days_since_last_click", "days_since_first_purchase",
                  "days_since_last_action"):
        if has("days_since_last_event", later):
            at_most("days_since_last_event", later, f"days_since_last_event <= {later}")
    for later in ("recency_days", "days_since_last_open", "days_since_last_click"):  # each an action
        if has("days_since_last_action", later):
            at_most("days_since_last_action", later, f"days_since_last_action <= {later}")
    acted = [c for c in ("n_email_open", "n_email_click", "frequency") if c in f]
    if "days_since_last_action" in f and acted:  # unknown only without any action (sends, bounces)
        check("days_since_last_action known where there was an open, a click or a purchase",
              num("days_since_last_action").notna() | (sum(num(c).fillna(0) for c in acted) == 0))
    if has("recency_days", "days_since_first_purchase"):
        at_most("recency_days", "days_since_first_purchase", "recency_days <= days_since_first_purchase")
    if "tenure_days" in f:
        for earlier in ("days_since_last_event", "days_since_last_action", "days_since_first_purchase",
                        "days_since_signup"):
            if earlier in f:
                at_most(earlier, "tenure_days", f"{earlier} <= tenure_days")
        check("tenure_days known (a customer has an event or a signup before T)", num("tenure_days").notna())

    # money
    if has("monetary_total", "frequency"):
        total, n = num("monetary_total"), num("frequency")
        check("monetary_total not null, >= 0", total.notna() & (total >= -EPS))
        check("monetary_total is 0 without purchases", (n > 0) | (total == 0))
        if "monetary_mean" in f:
            mean = num("monetary_mean")
            check("monetary_mean = monetary_total / frequency",
                  (n == 0) & mean.isna() | np.isclose(mean, total / n.where(n > 0), rtol=1e-9, atol=1e-9))
        if has("monetary_mean", "monetary_max"):
            at_most("monetary_mean", "monetary_max", "monetary_mean <= monetary_max")
            at_most("monetary_max", "monetary_total", "monetary_max <= monetary_total")
    if "refund_amount" in f:
        check("refund_amount not null, >= 0", num("refund_amount").notna() & (num("refund_amount") >= 0))
    if has("refund_rate", "n_refund", "frequency"):
        n = num("frequency")
        check("refund_rate = n_refund / frequency", np.isclose(num("refund_rate"), num("n_refund") / n.where(n > 0),
                                                               equal_nan=True))

    # rhythm
    if has("mean_gap_days", "frequency", "recency_days", "days_since_first_purchase"):
        n, mean = num("frequency"), num("mean_gap_days")
        check("mean_gap_days known iff frequency >= 2", mean.notna() == (n >= 2))
        span = num("days_since_first_purchase") - num("recency_days")
        check("mean_gap_days = (first - last purchase) / (frequency - 1)",
              mean.isna() | np.isclose(mean, span / (n - 1), rtol=1e-9, atol=1e-6))
        check("mean_gap_days >= 0", mean.isna() | (mean >= 0))
    if has("std_gap_days", "frequency"):
        check("std_gap_days known iff frequency >= 3", num("std_gap_days").notna() == (num("frequency") >= 3))
    for c in [c for c in f if re.fullmatch(r"[a-z]+_trend_[0-9]+d", c)]:
        check(f"{c} not null, > 0", num(c).notna() & (num(c) > 0))

    # engagement
    if has("n_email_send", "n_email_open"):
        sends = num("n_email_send")
        if "open_rate" in f:
            check("open_rate = n_email_open / n_email_send (null without sends)",
                  np.isclose(num("open_rate"), num("n_email_open") / sends.where(sends > 0), equal_nan=True))
        if "sends_since_last_open" in f:
            since = num("sends_since_last_open")
            at_most("sends_since_last_open", "n_email_send", "sends_since_last_open <= n_email_send")
            check("sends_since_last_open = n_email_send when never opened", (num("n_email_open") > 0) | (since == sends))

    # flags
    for c in ("unsubscribed", "bounced", "complained"):
        if c in f:
            check(f"{c} not null", f[c].notna())
    return out
