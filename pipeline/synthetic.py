"""Synthetic e-commerce shop with email marketing, for demos, tests and benchmarks.

Every customer gets hidden traits: a purchase rate (gamma, very uneven across people), an
email engagement (beta: how often they open; clicks follow opens), a lifetime after which
they silently "die" (exponential hazard, BG/NBD-style dropout: no more orders or browsing,
opens fall to 15% of before, unsubscribes rise), a typical basket value (lognormal) and
preferred categories. Traits are mildly correlated with each other and with the visible
attributes (acquisition channel, country, plan). About 40% of customers exist before the
window starts, the rest sign up over it with mild growth. Orders follow a Poisson process
with a Nov/Dec peak (Black-Friday week highest) and a summer dip; most web/app orders are
preceded by page views and an add-to-cart. Twice a week (Tue, Fri) a campaign goes to a
share of the consented, not unsubscribed, not bounced customers; a click sometimes leads to
an attributed order within hours. ~5% of orders are refunded days later, refunds often lead
to a support ticket, and consent is granted at signup or later and sometimes withdrawn.
About 1% of people hold two customer ids (a later guest account) linked by a shared email or
device id, a few hold three (A-B share a device, B-C an email). History up to a date
therefore predicts the next quarter's orders well, but far from perfectly.

Two optional departures, for demos and tests of monitoring (without them the output is
bit-for-bit what it was):

* a **drifted period** (``generate(..., drift_from=D, drift=s)``): from the end of day D on,
  behaviour moves by strength s in [0, 1]. At full strength email opens halve, the order rate
  falls by 40 % (organic orders; attributed ones follow the opens), baskets are 60 % larger, and
  60 % of new sign-ups come through a new acquisition channel, ``influencer``, whose customers
  engage less and leave sooner. Feature distributions move; customers who signed up earlier keep
  their traits. (Before D the drifted shop is another draw from the same distribution, not the
  same events: outcomes after D change how many random numbers each step uses.)
* a **campaign that works** (``apply_treatment``): extra orders, after the fact, for a share of
  the treated members of a segment who would not have bought, so that holdout lift is real.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy import stats

from features.asof import parse_as_of

EVENT_TYPES = ("signed_up", "consent_granted", "consent_withdrawn", "email_sent", "email_bounced",
               "email_opened", "email_clicked", "spam_complaint", "unsubscribed", "page_viewed",
               "cart_added", "order_completed", "order_refunded", "support_ticket_opened")
E = {name: code for code, name in enumerate(EVENT_TYPES)}
CATEGORIES = ("apparel", "shoes", "beauty", "home", "electronics", "sports", "toys", "grocery")
CATEGORY_POPULARITY = np.array([0.24, 0.12, 0.14, 0.14, 0.1, 0.1, 0.06, 0.1])
CHANNELS = ("email", "web", "app", "store")
WEB, APP, STORE = 1, 2, 3
COUNTRIES = ("DE", "FR", "GB", "NL", "ES", "IT")
COUNTRY_SHARES = np.array([0.38, 0.2, 0.16, 0.1, 0.09, 0.07])
COUNTRY_BASKET = np.array([0.0, -0.05, 0.1, 0.05, -0.15, -0.1])  # log-basket shift
ACQUISITION = ("organic", "paid_search", "social", "referral", "influencer")
ACQUISITION_SHARES = np.array([0.45, 0.25, 0.18, 0.12, 0.0])  # influencer: only in a drifted period
ACQUISITION_LIFE = np.array([1.0, 0.7, 0.8, 1.4, 0.6])  # lifetime multiplier
ACQUISITION_ENGAGEMENT = np.array([0.0, -0.2, 0.25, 0.3, -0.3])  # latent z shift
INFLUENCER = ACQUISITION.index("influencer")
MONTH_SEASON = np.array([0.9, 0.85, 0.95, 0.95, 0.95, 0.85, 0.78, 0.8, 0.95, 1.0, 1.3, 1.45])
BLACK_FRIDAY_BOOST = 1.3  # Nov 20-30
SEASON_MAX = MONTH_SEASON.max() * BLACK_FRIDAY_BOOST
DAY, HOUR, YEAR = 86_400, 3_600, 365.25 * 86_400
CHUNK = 25_000  # customers per simulation chunk; a constant, so output depends only on the arguments
MEAN_RATE, MEAN_LIFE_YEARS = 3.0, 2.0  # orders per year while alive; mean lifetime
# a drifted period at full strength: multipliers are 1 + strength * effect
DRIFT_OPENS, DRIFT_ORDERS, DRIFT_BASKET = -0.5, -0.4, 0.6
DRIFT_NEW_CHANNEL = 0.6  # share of new sign-ups through the new channel
DRIFT_STREAM = 0xD41F7  # the drift's own random stream, so an undrifted shop draws exactly as before
PURCHASE = "order_completed"


@dataclass(frozen=True)
class SyntheticShop:
    events: pd.DataFrame
    customers: pd.DataFrame
    identities: pd.DataFrame


@dataclass(frozen=True)
class Drift:
    """Behaviour from ``t0`` (epoch seconds) on, moved by ``strength`` (0: not at all, 1: fully)."""

    t0: int
    strength: float
    seed: int

    def level(self, t: np.ndarray, effect: float) -> np.ndarray:
        """Multiplier at times ``t``: 1 before t0, ``1 + strength * effect`` from t0 on."""
        return np.where(t >= self.t0, 1.0 + self.strength * effect, 1.0)

    def new_channel(self, acq: np.ndarray, signup: np.ndarray) -> np.ndarray:
        """Most sign-ups of the drifted period come through the new channel."""
        rng = np.random.default_rng([DRIFT_STREAM, self.seed])
        moved = (signup >= self.t0) & (rng.random(acq.size) < DRIFT_NEW_CHANNEL * self.strength)
        return np.where(moved, INFLUENCER, acq)


def drift_level(drift: Drift | None, t: np.ndarray, effect: float) -> np.ndarray | float:
    """1.0 without drift: multiplying by it leaves every value exactly as it was."""
    return 1.0 if drift is None else drift.level(t, effect)


def generate(n_customers: int, seed: int = 0, end: str | datetime = "2026-11-27", years: float = 2.0,
             progress: Callable[[int, int], None] | None = None,
             drift_from: str | datetime | date | None = None, drift: float = 0.0) -> SyntheticShop:
    """Simulate `n_customers` customer ids over `years` of history ending at `end` (UTC).

    With ``drift_from`` and ``drift`` > 0, behaviour shifts after the end of day ``drift_from``
    by strength ``drift`` in [0, 1] (see the module docstring)."""
    if n_customers < 1:
        raise ValueError("n_customers must be >= 1")
    start, stop = history_window(end, years)
    shift = drift_period(drift_from, drift, seed, start, stop)
    seeds = np.random.SeedSequence(seed).spawn(1 + -(-n_customers // CHUNK))
    rng = np.random.default_rng(seeds[0])
    tr = draw_traits(rng, n_customers, start, stop, shift)
    links = link_duplicate_accounts(rng, tr, stop)
    draw_consent(rng, tr)
    campaigns = campaign_schedule(rng, start, stop)
    blocks = []
    if progress:
        progress(0, n_customers)
    for k, lo in enumerate(range(0, n_customers, CHUNK)):
        idx = np.arange(lo, min(lo + CHUNK, n_customers))
        blocks += simulate_chunk(np.random.default_rng(seeds[k + 1]), tr, idx, campaigns, start, stop, shift)
        if progress:
            progress(int(idx[-1]) + 1, n_customers)
    ids = customer_ids(tr["signup"])
    events = assemble_events(blocks, tr, ids, campaigns, start, stop)
    return SyntheticShop(events, customers_frame(tr, ids, stop), identities_frame(rng, tr, links, ids))


#: Parquet footer key of the files :func:`write` makes: only such files are replaced without --force,
#: and only such a log gets a simulated campaign's orders
GENERATED = b"dynseg.generated"


def is_generated(path: Path) -> bool:
    """Whether ``path`` is a Parquet file this module wrote (its footer carries :data:`GENERATED`)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        mark = (meta.metadata or {}).get(GENERATED)
        # the rows it was written with: pyarrow carries the key over when the file is read and
        # written again, and a log edited so (an event added) is no longer the generated one
        return mark is not None and json.loads(mark).get("rows") == meta.num_rows
    except (OSError, ValueError, AttributeError):  # not Parquet, unreadable, an older mark: not ours
        return False


def to_parquet_marked(frame: pd.DataFrame, path: Path, what: str) -> None:
    """``frame.to_parquet(path)``, its footer marked as generated (``what`` says by what)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    mark = json.dumps({"by": what, "rows": len(frame)}).encode()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), GENERATED: mark}), path)


def check_target(out_dir: Path, force: bool = False) -> dict[str, Path]:
    """The files :func:`write` would write in ``out_dir`` (links resolved), refused before any work
    when one exists that this module did not write (unless ``force``) or cannot be written."""
    import os

    from features.asof import BadValue
    from pipeline.workspace import check_writable

    paths = {name: Path(os.path.realpath(Path(out_dir) / f"{name}.parquet")) for name in ("events", "customers", "identities")}
    theirs = [p for p in paths.values() if p.exists() and not is_generated(p)]
    if theirs and not force:
        raise BadValue(f"{', '.join(map(str, theirs))} {'is' if len(theirs) == 1 else 'are'} not from `dynseg data "
                       "generate`: writing the synthetic shop there would replace your data. Choose another --out "
                       "folder, or add --force to replace them")
    for p in paths.values():
        check_writable(p, given=True)
    return paths


def write(shop: SyntheticShop, out_dir: Path, force: bool = False, what: str = "dynseg data generate") -> dict[str, Path]:
    """Write the three frames as Parquet files beside each other, as one set: each to a temp file
    first, then all renamed into place with Ctrl-C held back, so an interrupted run leaves the old
    set or the new one, never a new log beside old profiles. Files of the same names that this
    module did not write (the user's own exports) are refused unless ``force``."""
    import os

    from features.writers import signals_held
    from pipeline.workspace import temp_sibling

    paths = check_target(out_dir, force)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    staged: dict[Path, Path] = {}
    try:
        for name, final in paths.items():
            staged[final] = temp_sibling(final)
            to_parquet_marked(getattr(shop, name), staged[final], what)
        with signals_held():
            for final, tmp in staged.items():
                os.replace(tmp, final)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return {name: Path(out_dir) / f"{name}.parquet" for name in paths}


# ---------------------------------------------------------------- time helpers
def history_window(end: str | datetime | date, years: float) -> tuple[int, int]:
    """(start, end) in epoch seconds; a bare date means the end of that day (UTC)."""
    is_day = (isinstance(end, date) and not isinstance(end, datetime)) or (
        isinstance(end, str) and not any(c in end for c in "T :"))
    ts = pd.Timestamp(end)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if is_day:
        ts = ts.normalize() + pd.Timedelta(days=1)
    stop = int((ts - pd.Timestamp(0)) // pd.Timedelta(seconds=1))
    return stop - int(round(years * YEAR)), stop


def epoch_seconds(t: str | datetime | date) -> int:
    """An instant as a run's as_of reads it (a bare date means the end of that day), in epoch seconds."""
    return int((pd.Timestamp(parse_as_of(t)) - pd.Timestamp(0)) // pd.Timedelta(seconds=1))


def drift_period(drift_from, strength: float, seed: int, start: int, stop: int) -> Drift | None:
    """The drift to simulate, or None; refuses a strength outside [0, 1] or a start outside the history."""
    if not 0 <= strength <= 1:
        raise ValueError(f"drift must be between 0 (none) and 1 (full strength); found {strength}")
    if drift_from is None:
        if strength:
            raise ValueError(f"drift={strength} needs drift_from, the date after which behaviour shifts")
        return None
    t0 = epoch_seconds(drift_from)
    if not start < t0 < stop:
        first, last = (pd.Timestamp(x, unit="s") for x in (start, stop))
        raise ValueError(f"drift_from={drift_from!s} is outside the simulated history [{first}, {last}); "
                         "pick a date inside it")
    return Drift(t0, float(strength), seed) if strength else None


def seasonality(t: np.ndarray) -> np.ndarray:
    """Demand multiplier by month, plus a Black-Friday week boost (Nov 20-30)."""
    d = t.astype("datetime64[s]")
    month_start = d.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12
    day = (d - month_start).astype("timedelta64[D]").astype(np.int64)
    return MONTH_SEASON[month] * np.where((month == 10) & (day >= 19), BLACK_FRIDAY_BOOST, 1.0)


def poisson_times(rng, rate_per_year, t0, t1, seasonal=True, level: Callable | None = None):
    """Event times of an inhomogeneous Poisson process per customer on [t0, t1) (thinning).

    ``level(t)`` (at most 1) further scales the rate over time, e.g. in a drifted period."""
    dur = np.clip(t1 - t0, 0, None).astype(np.float64)
    boost = SEASON_MAX if seasonal else 1.0
    owner = np.repeat(np.arange(len(dur)), rng.poisson(rate_per_year * boost * dur / YEAR))
    t = t0[owner] + (rng.random(owner.size) * dur[owner]).astype(np.int64)
    if seasonal:
        demand = seasonality(t) if level is None else seasonality(t) * level(t)
        keep = rng.random(owner.size) * SEASON_MAX < demand
        owner, t = owner[keep], t[keep]
    return owner, t


def expand_ranges(lo, hi):
    """For integer ranges [lo_i, hi_i): (owner i, value) for every member, owners ascending."""
    counts = np.clip(hi - lo, 0, None)
    owner = np.repeat(np.arange(len(lo)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    return owner, lo[owner] + np.arange(owner.size) - first


# ---------------------------------------------------------------- customers
def draw_signups(rng, n, start, stop):
    """40% pre-existing (up to 3 years before the window), the rest with ~40% growth."""
    existing = rng.random(n) < 0.4
    g = np.log(1.4)
    x = np.log1p(rng.random(n) * (np.exp(g) - 1)) / g
    before = start - rng.random(n) * 3 * YEAR
    return np.where(existing, before, start + x * (stop - 1 - start)).astype(np.int64)


def draw_traits(rng, n, start, stop, drift: Drift | None = None) -> dict[str, np.ndarray]:
    """Latent behaviour traits (Gaussian copula: rate, engagement, lifetime correlated)."""
    acq = rng.choice(len(ACQUISITION), n, p=ACQUISITION_SHARES)
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_SHARES)
    z = rng.standard_normal((4, n))
    signup = draw_signups(rng, n, start, stop)
    if drift is not None:
        acq = drift.new_channel(acq, signup)
    z_eng = z[0] + ACQUISITION_ENGAGEMENT[acq]
    z_rate = 0.35 * z[0] + np.sqrt(1 - 0.35**2) * z[1]
    z_life = 0.3 * z[0] + np.sqrt(1 - 0.3**2) * z[2]
    life = rng.exponential(MEAN_LIFE_YEARS * YEAR * np.exp(0.5 * z_life - 0.125) * ACQUISITION_LIFE[acq])
    eng = stats.beta.ppf(stats.norm.cdf(z_eng), 1.6, 5.0)
    main = rng.choice([WEB, APP, STORE], n, p=[0.55, 0.3, 0.15])
    return {
        "signup": signup, "death": signup + life.astype(np.int64), "acq": acq, "country": country,
        "rate": stats.gamma.ppf(stats.norm.cdf(z_rate), 0.8, scale=MEAN_RATE / 0.8),
        "eng": eng, "click": np.clip(rng.beta(2, 10, n) * (0.6 + eng), 0, 0.9),
        "basket_mu": np.log(40) + 0.45 * z[3] + COUNTRY_BASKET[country],
        "cat_cum": np.cumsum(rng.dirichlet(4 * CATEGORY_POPULARITY, n), axis=1),
        "main": main, "has_device": (main == APP) | (rng.random(n) < 0.15),
        "bad_email": rng.random(n) < 0.015, "is_dup": np.zeros(n, bool),
        "plan_plus": rng.random(n) < 1 / (1 + np.exp(2.0 - 0.8 * z_rate - 0.4 * z[0])),
    }


def link_duplicate_accounts(rng, tr, stop) -> dict[str, np.ndarray]:
    """~1% of people get a later second id (own small history); a few get a third (chain)."""
    n = len(tr["signup"])
    n_groups = int(round(0.0099 * n)) if n >= 20 else 0
    n_chain = min(max(1, int(round(0.06 * n_groups))), n_groups) if n_groups else 0
    rows = rng.permutation(n)[: 2 * n_groups + n_chain]
    prim, sec, third = rows[:n_groups], rows[n_groups:2 * n_groups], rows[2 * n_groups:]
    for later, earlier in ((sec, prim), (third, sec[:n_chain])):  # the extra id is created later
        after = tr["signup"][earlier]
        tr["signup"][later] = after + (rng.uniform(0.05, 0.9, later.size) * (stop - after)).astype(np.int64)
    extra, owners = np.concatenate([sec, third]), np.concatenate([prim, prim[:n_chain]])
    for key in ("death", "eng", "click", "basket_mu", "cat_cum", "country", "main", "rate"):
        tr[key][extra] = tr[key][owners]  # same person, same traits ...
    tr["rate"][extra] *= 0.3  # ... but the extra account is used much less
    tr["is_dup"][extra] = True
    via_email = rng.random(n_groups) < 0.5
    via_email[:n_chain] = False  # chain: A-B share a device, B-C share an email
    email_src, device_src = np.arange(n), np.arange(n)
    email_src[sec[via_email]] = prim[via_email]
    email_src[third] = sec[:n_chain]
    device_src[sec[~via_email]] = prim[~via_email]
    tr["has_device"][prim[~via_email]] = tr["has_device"][sec[~via_email]] = True
    return {"email_src": email_src, "device_src": device_src}


def draw_consent(rng, tr):
    """Consent interval [c0, c1): granted at signup or later, withdrawn after a while."""
    n = len(tr["signup"])
    at_signup = rng.random(n) < np.where(tr["is_dup"], 0.4, 0.65 + 0.3 * tr["eng"])
    later = tr["signup"] + rng.exponential(2.5 * YEAR, n).astype(np.int64)
    tr["c0"] = np.where(at_signup, tr["signup"], later)
    tr["c1"] = tr["c0"] + rng.exponential(10 * YEAR, n).astype(np.int64)
    tr["optout"] = np.full(n, np.iinfo(np.int64).max)  # unsubscribe / complaint time, set by email_events


def campaign_schedule(rng, start, stop) -> dict[str, np.ndarray]:
    """Two campaigns a week (Tue, Fri mornings); each targets a share and features a category."""
    days = np.arange(start // DAY, stop // DAY + 1)
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    t = days[(weekday == 1) | (weekday == 4)] * DAY + 9 * HOUR
    t = t + rng.integers(0, 3 * HOUR, t.size)
    t = t[(t >= start) & (t < stop)]
    return {"t": t, "share": rng.uniform(0.25, 0.45, t.size), "category": rng.integers(0, len(CATEGORIES), t.size)}


# ---------------------------------------------------------------- events
def block(cust, ts, etype, amount=np.nan, category=-1, channel=-1, campaign=-1):
    n = len(cust)
    return {"cust": np.asarray(cust, np.int64), "ts": np.asarray(ts, np.int64),
            "etype": np.full(n, etype, np.int8), "amount": np.broadcast_to(np.asarray(amount, np.float64), (n,)),
            "category": np.broadcast_to(np.asarray(category, np.int8), (n,)),
            "channel": np.broadcast_to(np.asarray(channel, np.int8), (n,)),
            "campaign": np.broadcast_to(np.asarray(campaign, np.int32), (n,))}


def pick_categories(rng, cat_cum):
    """One category per row from each row's cumulative category preferences."""
    return (rng.random(len(cat_cum))[:, None] > cat_cum).sum(axis=1).clip(0, len(CATEGORIES) - 1)


def first_terminal_only(owner, terminal):
    """Mask keeping each owner's rows up to and including its first terminal row."""
    prior = np.cumsum(terminal) - terminal
    group_start = np.r_[True, owner[1:] != owner[:-1]]
    return prior - np.maximum.accumulate(np.where(group_start, prior, 0)) == 0


def email_events(rng, tr, idx, camp, start, stop, drift=None):
    """Sends to the consented list, opens/clicks/unsubscribes/bounces/complaints."""
    eng, alive_until = tr["eng"][idx], tr["death"][idx]
    lo_t = np.maximum(np.maximum(tr["c0"][idx], tr["signup"][idx]), start)
    hi_t = np.minimum(tr["c1"][idx], stop)
    owner, c = expand_ranges(np.searchsorted(camp["t"], lo_t), np.searchsorted(camp["t"], hi_t))
    keep = rng.random(owner.size) < camp["share"][c] * (0.7 + 0.6 * eng[owner])
    owner, c = owner[keep], c[keep]
    n = owner.size
    sent = camp["t"][c] + rng.integers(0, 1800, n)
    alive = sent < alive_until[owner]
    bounced = tr["bad_email"][idx][owner] | (rng.random(n) < 0.0005)
    p_open = eng[owner] * np.where(alive, 1.0, 0.15) * drift_level(drift, sent, DRIFT_OPENS)
    opened = ~bounced & (rng.random(n) < p_open)
    clicked = opened & (rng.random(n) < tr["click"][idx][owner])
    p_unsub = 0.008 + 0.03 * (1 - eng[owner]) + np.where(alive, 0.0, 0.1)
    unsub = opened & (rng.random(n) < p_unsub)
    complaint = ~bounced & (rng.random(n) < 0.0005 * (1.5 - eng[owner]))
    t_open = sent + rng.exponential(5 * HOUR, n).astype(np.int64) + 30
    t_click, t_unsub = t_open + rng.integers(10, 600, n), t_open + rng.integers(5, 300, n)
    t_bounce, t_complaint = sent + rng.integers(30, 300, n), t_open + rng.integers(5, 600, n)
    t_term = np.where(bounced, t_bounce, np.where(unsub, t_unsub, t_complaint))
    terminal = (bounced | unsub | complaint) & (t_term < stop)
    k = first_terminal_only(owner, terminal)
    optout = k & terminal & ~bounced
    tr["optout"][idx[owner[optout]]] = t_term[optout]
    cust, cid = idx[owner], c
    out = [block(cust[k], sent[k], E["email_sent"], channel=0, campaign=cid[k])]
    for mask, t, et in ((bounced, t_bounce, "email_bounced"), (opened, t_open, "email_opened"),
                        (clicked, t_click, "email_clicked"), (unsub, t_unsub, "unsubscribed"),
                        (complaint, t_complaint, "spam_complaint")):
        m = k & mask
        out.append(block(cust[m], t[m], E[et], channel=0, campaign=cid[m]))
    m = k & clicked & alive & (rng.random(n) < 0.08)  # click -> attributed order within hours
    attributed = (cust[m], t_click[m] + rng.exponential(6 * HOUR, m.sum()).astype(np.int64) + 300, cid[m])
    return out, attributed


def order_events(rng, tr, idx, camp, attributed, start, stop, drift=None):
    """Organic + campaign-attributed orders, their web/app funnel, refunds, support tickets."""
    t0 = np.maximum(tr["signup"][idx], start)
    level = None if drift is None else (lambda t: drift.level(t, DRIFT_ORDERS))
    owner, t = poisson_times(rng, tr["rate"][idx], t0, np.minimum(tr["death"][idx], stop), level=level)
    cust = np.concatenate([idx[owner], attributed[0]])
    t = np.concatenate([t, attributed[1]])
    n, n_org = cust.size, owner.size
    campaign = np.r_[np.full(n_org, -1), attributed[2]].astype(np.int32)
    main = tr["main"][cust]
    channel = np.where(rng.random(n) < 0.8, main, rng.choice([WEB, APP, STORE], n))
    channel[n_org:] = np.where(main[n_org:] == APP, APP, WEB)
    category = pick_categories(rng, tr["cat_cum"][cust])
    featured = (campaign >= 0) & (rng.random(n) < 0.5)
    category[featured] = camp["category"][campaign[featured]]
    basket = np.exp(tr["basket_mu"][cust] + 0.35 * rng.standard_normal(n)) * drift_level(drift, t, DRIFT_BASKET)
    amount = np.maximum(np.round(basket, 2), 2.0)
    out = [block(cust, t, E["order_completed"], amount, category, channel, campaign)]
    online = channel != STORE
    views = np.repeat(np.flatnonzero(online), 1 + rng.poisson(1.2, online.sum()))
    out.append(block(cust[views], t[views] - rng.integers(600, 3600, views.size), E["page_viewed"],
                     channel=channel[views]))
    cart = online & (rng.random(n) < 0.9)
    out.append(block(cust[cart], t[cart] - rng.integers(30, 600, cart.sum()), E["cart_added"],
                     category=category[cart], channel=channel[cart]))
    ref = rng.random(n) < 0.05
    t_ref = t[ref] + rng.integers(2 * DAY, 20 * DAY, ref.sum())
    full = rng.random(ref.sum()) < 0.7
    ref_amount = np.where(full, amount[ref], np.round(amount[ref] * rng.uniform(0.2, 0.9, ref.sum()), 2))
    out.append(block(cust[ref], t_ref, E["order_refunded"], ref_amount, category[ref], channel[ref]))
    tick = rng.random(t_ref.size) < 0.3
    base_owner, base_t = poisson_times(rng, np.full(idx.size, 0.12), t0, np.full(idx.size, stop), seasonal=False)
    out.append(block(np.r_[cust[ref][tick], idx[base_owner]],
                     np.r_[t_ref[tick] + rng.integers(HOUR, 4 * DAY, tick.sum()), base_t],
                     E["support_ticket_opened"], channel=WEB))
    return out


def browsing_events(rng, tr, idx, start, stop):
    """Sessions without an order while alive: page views, sometimes an abandoned cart."""
    rate = 0.8 * tr["rate"][idx] + 3.0 * tr["eng"][idx]
    t0 = np.maximum(tr["signup"][idx], start)
    owner, t = poisson_times(rng, rate, t0, np.minimum(tr["death"][idx], stop))
    cust = idx[owner]
    channel = np.where(tr["main"][cust] == APP, APP, WEB)
    views = np.repeat(np.arange(cust.size), 1 + rng.poisson(1.5, cust.size))
    cart = rng.random(cust.size) < 0.2
    return [block(cust[views], t[views] + rng.integers(0, 1800, views.size), E["page_viewed"],
                  channel=channel[views]),
            block(cust[cart], t[cart] + rng.integers(60, 1900, cart.sum()), E["cart_added"],
                  category=pick_categories(rng, tr["cat_cum"][cust[cart]]), channel=channel[cart])]


def lifecycle_events(tr, idx):
    """Sign-up, consent granted (at signup or later), consent withdrawn (unless opted out)."""
    signup, c0, c1, optout = (tr[k][idx] for k in ("signup", "c0", "c1", "optout"))
    channel = np.where(tr["main"][idx] == APP, APP, WEB)
    withdrawn = c1 < optout
    return [block(idx, signup, E["signed_up"], channel=channel),
            block(idx, np.where(c0 == signup, c0 + 1, c0), E["consent_granted"]),
            block(idx[withdrawn], c1[withdrawn], E["consent_withdrawn"])]


def simulate_chunk(rng, tr, idx, camp, start, stop, drift=None):
    emails, attributed = email_events(rng, tr, idx, camp, start, stop, drift)
    return (emails + order_events(rng, tr, idx, camp, attributed, start, stop, drift)
            + browsing_events(rng, tr, idx, start, stop) + lifecycle_events(tr, idx))


# ---------------------------------------------------------------- frames
def hex_ids(rng, n, n_bytes) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * n_bytes).hex().encode(), dtype=f"S{2 * n_bytes}").astype(str)


def customer_ids(signup) -> np.ndarray:
    """'c0000123'-style ids numbered in signup order."""
    rank = np.empty(signup.size, np.int64)
    rank[np.argsort(signup, kind="stable")] = np.arange(signup.size)
    width = max(7, len(str(max(signup.size - 1, 0))))
    return np.char.add("c", np.char.zfill(rank.astype(str), width))


def decode(codes, labels) -> pa.Array:
    """Integer codes (-1 = missing) -> arrow string array."""
    codes = np.asarray(codes)
    arr = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), pa.array(list(labels)))
    return arr.dictionary_decode()


def assemble_events(blocks, tr, ids, camp, start, stop) -> pd.DataFrame:
    cols = {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}
    keep = (cols["ts"] >= start) & (cols["ts"] < stop) & (cols["ts"] >= tr["signup"][cols["cust"]])
    cols = {k: v[keep] for k, v in cols.items()}
    order = np.lexsort((cols["etype"], cols["cust"], cols["ts"]))
    cols = {k: v[order] for k, v in cols.items()}
    n = order.size
    digits = pc.utf8_lpad(pa.array(np.arange(1, n + 1)).cast(pa.string()), 9, "0")
    event_id = pc.binary_join_element_wise("e", digits, "")
    campaign_ids = np.char.add("cmp", np.char.zfill(np.arange(camp["t"].size).astype(str), 4))
    table = pa.table({
        "event_id": event_id, "customer_id": decode(cols["cust"], ids),
        "event_type": decode(cols["etype"], EVENT_TYPES),
        "ts": pa.array(cols["ts"] * 1000, pa.timestamp("ms")), "amount": pa.array(cols["amount"], pa.float64()),
        "category": decode(cols["category"], CATEGORIES), "channel": decode(cols["channel"], CHANNELS),
        "campaign_id": decode(cols["campaign"], campaign_ids),
    })
    return table.to_pandas()


def customers_frame(tr, ids, stop) -> pd.DataFrame:
    signup, c0, c1, optout = tr["signup"], tr["c0"], tr["c1"], tr["optout"]
    consent = (c0 < stop) & (c1 >= stop) & (optout >= stop)
    changes = np.stack([signup, np.where(c0 < stop, c0, signup), np.where(c1 < stop, c1, signup),
                        np.where(optout < stop, optout, signup)])
    df = pd.DataFrame({
        "customer_id": pd.array(ids, dtype="str"), "signup_at": (signup * 1000).astype("datetime64[ms]"),
        "email_consent": consent, "consent_updated_at": (changes.max(axis=0) * 1000).astype("datetime64[ms]"),
        "country": pd.array(np.array(COUNTRIES)[tr["country"]], dtype="str"),
        "acquisition_channel": pd.array(np.array(ACQUISITION)[tr["acq"]], dtype="str"),
        "plan": pd.array(np.where(tr["plan_plus"], "plus", "free"), dtype="str"),
    })
    return df.sort_values("customer_id", ignore_index=True)


def identities_frame(rng, tr, links, ids) -> pd.DataFrame:
    n = ids.size
    emails, devices = hex_ids(rng, n, 16), np.char.add("dev-", hex_ids(rng, n, 8))
    dev = np.flatnonzero(tr["has_device"])
    df = pd.DataFrame({
        "customer_id": pd.array(np.r_[ids, ids[dev]], dtype="str"),
        "id_type": pd.array(np.r_[np.full(n, "email"), np.full(dev.size, "device")], dtype="str"),
        "id_value": pd.array(np.r_[emails[links["email_src"]], devices[links["device_src"][dev]]], dtype="str"),
    })
    return df.sort_values(["customer_id", "id_type"], ignore_index=True)


# ---------------------------------------------------------------- a campaign that works
def apply_treatment(events: pd.DataFrame, treated_customer_ids, start: str | datetime | date, horizon_days: float,
                    uplift: float, seed: int = 0) -> pd.DataFrame:
    """``events`` plus the orders a campaign caused among ``treated_customer_ids`` in [start, start + horizon).

    The uplift is additive among non-buyers: of the treated customers without an order in the
    window, a random share ``uplift`` orders once. A treated group that would have converted at
    rate p converts at p + uplift * (1 - p), so its true absolute lift over a comparable holdout is
    ``uplift * (1 - p)``. Pass only the treated (sendable, not held-out) members of a run; ``start``
    is the run's as_of (a bare date means the end of that day).

    Each order looks like the customer's own: its amount is the median of their earlier orders
    times the simulation's lognormal noise (a shop-like basket for customers who never ordered),
    category and channel those of one of their earlier orders (else by popularity, on the web),
    and an online order is preceded by a page view and a cart add. Same arguments, same events;
    the input frame is not modified.
    """
    if not 0 <= uplift <= 1:
        raise ValueError(f"uplift must be a share of the treated non-buyers between 0 and 1; found {uplift}")
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1 (the run's outcome window in days); found {horizon_days}")
    t0 = epoch_seconds(start)
    t1 = t0 + int(round(horizon_days * DAY))
    ts = _epoch_column(events["ts"])
    newest = int(ts.max())
    if t1 > newest + DAY:
        raise ValueError(f"the treatment window [{pd.Timestamp(t0, unit='s')}, {pd.Timestamp(t1, unit='s')}) ends "
                         f"after the newest event ({pd.Timestamp(newest, unit='s')}): its outcome has not happened "
                         "in the data. Pick an earlier run or a shorter horizon.")
    is_order = (events["event_type"] == PURCHASE).to_numpy()
    window = is_order & (ts >= t0) & (ts < t1)
    treated = np.unique(np.asarray(list(treated_customer_ids), dtype=str))
    buyers = np.unique(events.loc[window, "customer_id"].to_numpy(dtype=str))
    candidates = treated[~np.isin(treated, buyers)]
    rng = np.random.default_rng(seed)
    converts = candidates[rng.random(candidates.size) < uplift]
    extra = _treatment_events(rng, events[is_order & (ts < t0)], ts[is_order & (ts < t0)], converts, t0, t1)
    extra["event_id"] = [f"tr{pd.Timestamp(t0, unit='s'):%Y%m%d}s{seed}-{k:07d}" for k in range(len(extra))]
    # small.isin(large) walks the large side in Python for arrow strings; large.isin(small) does not
    clash = events["event_id"].isin(extra["event_id"]) if "event_id" in events else pd.Series(False)
    if clash.any():
        raise ValueError(f"event id {events['event_id'][clash].iloc[0]!r} exists already: this treatment "
                         f"(start {start}, seed {seed}) was applied to these events before")
    extra = extra[list(events.columns)].astype(events.dtypes.to_dict())
    out = pd.concat([events, extra], ignore_index=True)
    return out.sort_values("ts", kind="stable", ignore_index=True)


def _epoch_column(ts: pd.Series) -> np.ndarray:
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ((ts - pd.Timestamp(0)) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _treatment_events(rng, past: pd.DataFrame, past_ts: np.ndarray, customers: np.ndarray, t0: int,
                      t1: int) -> pd.DataFrame:
    """One order per customer in [t0 + 1h, t1), like one of their earlier orders; online ones with a funnel."""
    n = customers.size
    mine = past["customer_id"].to_numpy(dtype=str)
    keep = np.isin(mine, customers)
    hist = pd.DataFrame({"customer_id": mine[keep], "ts": past_ts[keep], "amount": past["amount"].to_numpy()[keep],
                         "category": past["category"].to_numpy(object)[keep],
                         "channel": past["channel"].to_numpy(object)[keep]}).sort_values(["customer_id", "ts"])
    per = hist.groupby("customer_id").agg(orders=("ts", "size"), median=("amount", "median"))
    first_row = pd.Series(np.cumsum(per["orders"].to_numpy()) - per["orders"].to_numpy(), per.index)
    count = per["orders"].reindex(customers).fillna(0).to_numpy(np.int64)
    has = count > 0
    # one of their earlier orders, uniformly; customers without one point past the end (a missing value)
    row = np.where(has, first_row.reindex(customers).fillna(0).to_numpy(np.int64)
                   + (rng.random(n) * count).astype(np.int64), len(hist))
    z = rng.standard_normal((2, n))
    basket = np.where(has, per["median"].reindex(customers).to_numpy(np.float64), np.exp(np.log(40) + 0.45 * z[0]))
    amount = np.maximum(np.round(np.nan_to_num(basket, nan=40.0) * np.exp(0.35 * z[1]), 2), 2.0)
    popular = np.array(CATEGORIES, object)[rng.choice(len(CATEGORIES), n, p=CATEGORY_POPULARITY)]
    category = np.append(hist["category"].to_numpy(object), None)[row]
    category = np.where(pd.isna(category), popular, category)
    channel = np.append(hist["channel"].to_numpy(object), None)[row]
    channel = np.where(pd.isna(channel), CHANNELS[WEB], channel)
    t = t0 + HOUR + (rng.random(n) * (t1 - t0 - HOUR)).astype(np.int64)
    online = channel != CHANNELS[STORE]
    view_t = t[online] - rng.integers(600, 3600, online.sum())
    cart_t = t[online] - rng.integers(30, 600, online.sum())
    parts = [
        (customers, t, PURCHASE, amount, category, channel),
        (customers[online], view_t, "page_viewed", np.nan, None, channel[online]),
        (customers[online], cart_t, "cart_added", np.nan, category[online], channel[online]),
    ]
    return pd.concat([pd.DataFrame({"customer_id": c, "ts": pd.to_datetime(tt, unit="s"), "event_type": et,
                                    "amount": a, "category": cat, "channel": ch, "campaign_id": None})
                      for c, tt, et, a, cat, ch in parts], ignore_index=True)
