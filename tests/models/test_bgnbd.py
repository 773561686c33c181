"""BG/NBD, the baseline lifetimes and PyMC-Marketing users would otherwise pick: it recovers the
parameters of customers simulated by its own story, predicts their next-period purchases at the
rate they happen, and takes its place among the baselines training compares the model with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from models import bgnbd
from models.evaluation import bgnbd_score, calibrated_baselines


def simulate(n: int, r: float, alpha: float, a: float, b: float, horizon: float, seed: int = 1):
    """Histories drawn by BG/NBD's own story, in days from each first purchase: buy at rate λ, drop
    out with probability p after each repeat purchase. Returns x, t_x, T and whether the customer
    bought in (T, T + horizon]."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(r, 1 / alpha, n), rng.beta(a, b, n)
    T = rng.uniform(30, 400, n)
    x, t_x, bought = np.zeros(n), np.zeros(n), np.zeros(n, bool)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                bought[i] = t <= T[i] + horizon
                break
            x[i], t_x[i] = x[i] + 1, t
            if rng.random() < p[i]:
                break
    return x, t_x, T, bought


@pytest.fixture(scope="module")
def histories():
    return simulate(20_000, r=0.8, alpha=40.0, a=0.6, b=3.0, horizon=30.0)


def test_the_fit_recovers_planted_parameters(histories):
    x, t_x, T, _ = histories
    m = bgnbd.fit(x, t_x, T)
    assert m.r == pytest.approx(0.8, rel=0.1) and m.alpha == pytest.approx(40.0, rel=0.15)
    assert m.a == pytest.approx(0.6, rel=0.25) and m.b == pytest.approx(3.0, rel=0.35)
    # the maximum: the fitted parameters' likelihood beats the planted ones' (on the same sample)
    fitted = bgnbd.log_likelihood(np.array([m.r, m.alpha, m.a, m.b]), x, t_x, T).sum()
    assert fitted >= bgnbd.log_likelihood(np.array([0.8, 40.0, 0.6, 3.0]), x, t_x, T).sum()


def test_next_period_purchases_come_at_the_predicted_rate(histories):
    x, t_x, T, bought = histories
    p = bgnbd.fit(x, t_x, T).p_purchase(x, t_x, T, 30.0)
    assert p.mean() == pytest.approx(bought.mean(), abs=0.01)
    for low, high in ((0, 0.1), (0.1, 0.3), (0.3, 1)):  # and within ranges of the prediction
        sel = (p >= low) & (p < high)
        assert sel.sum() > 500 and p[sel].mean() == pytest.approx(bought[sel].mean(), abs=0.03)
    assert roc_auc_score(bought, p) > 0.7


def test_closed_forms_match_their_definitions():
    m = bgnbd.BGNBD(r=0.8, alpha=40.0, a=0.6, b=3.0)
    # no repeat purchase: alive for sure; the chance of a purchase is the gamma mixture's
    assert m.p_alive(0, 0, 100) == 1.0
    assert m.p_purchase(0, 0, 100, 30) == pytest.approx(1 - (140 / 170) ** 0.8)
    # a buyer quiet for long after many purchases is likely gone; one who just bought is alive
    assert m.p_alive(10, 50, 400) < 0.05 < 0.9 < m.p_alive(10, 399, 400)
    # a longer horizon only adds chances
    assert m.p_purchase(3, 80, 100, 60) > m.p_purchase(3, 80, 100, 30) > 0


def test_nothing_to_fit_is_a_clear_error():
    with pytest.raises(ValueError, match="BG/NBD needs customers with a repeat purchase; none among 3 histories"):
        bgnbd.fit([0, 0, 0], [0, 0, 0], [10, 20, 30])


def _frame(x, t_x, T, label, never: int = 0) -> pd.DataFrame:
    """A snapshot frame as training builds it: the features BG/NBD reads, plus `never` customers
    who never bought (no recency, no first purchase)."""
    f = pd.DataFrame({"frequency": x + 1, "days_since_first_purchase": T, "recency_days": T - t_x,
                      "label": label.astype(int), "monetary_total": 10.0 * (x + 1)})
    none = pd.DataFrame({"frequency": np.zeros(never), "days_since_first_purchase": np.nan,
                         "recency_days": np.nan, "label": (np.arange(never) % 20 == 0).astype(int),
                         "monetary_total": 0.0})
    return pd.concat([f, none], ignore_index=True)


def test_the_baseline_scores_buyers_and_gives_never_buyers_their_rate(histories):
    x, t_x, T, bought = histories
    valid = _frame(x[:10_000], t_x[:10_000], T[:10_000], bought[:10_000], never=2000)
    test = _frame(x[10_000:], t_x[10_000:], T[10_000:], bought[10_000:], never=1000)
    score = bgnbd_score(test, "purchase", 30.0)
    assert np.isfinite(score[:10_000]).all() and np.isnan(score[10_000:]).all()
    assert (bgnbd_score(test, "churn", 30.0)[:10_000] == -score[:10_000]).all()  # churn: no purchase
    p = calibrated_baselines(valid, test, "purchase", 30.0)
    assert set(p) == {"recency", "rfm", "bgnbd"}
    # never-buyers: the validation snapshot's rate of never-buyers (1 in 20), not a buyer's score
    assert np.allclose(p["bgnbd"][10_000:], valid.label[10_000:].mean())
    buyers = p["bgnbd"][:10_000]
    assert buyers.mean() == pytest.approx(bought[10_000:].mean(), abs=0.015)
    assert roc_auc_score(bought[10_000:], buyers) > roc_auc_score(bought[10_000:], p["recency"][:10_000])


def test_a_frame_without_purchase_history_leaves_the_baseline_out(histories):
    x, t_x, T, bought = histories
    valid = _frame(x[:2000], t_x[:2000], T[:2000], bought[:2000])
    assert np.isnan(bgnbd_score(valid.drop(columns="days_since_first_purchase"), "purchase", 30.0)).all()
    one_time = valid.assign(frequency=1, recency_days=valid.days_since_first_purchase)  # nobody bought twice
    assert np.isnan(bgnbd_score(one_time, "purchase", 30.0)).all()
    assert "bgnbd" not in calibrated_baselines(one_time, one_time, "purchase", 30.0)


def test_a_test_snapshot_it_cannot_fit_gets_the_validation_rate_and_no_test_parameters(histories):
    x, t_x, T, bought = histories
    valid = _frame(x[:3000], t_x[:3000], T[:3000], bought[:3000])
    test = _frame(np.zeros(500), np.zeros(500), T[3000:3500], bought[3000:3500])  # nobody bought twice yet
    fits: dict = {}
    p = calibrated_baselines(valid, test, "purchase", 30.0, fits)
    assert set(fits["bgnbd"]) == {"valid"}  # fitted on the validation snapshot only
    assert np.allclose(p["bgnbd"], np.clip(valid.label.mean(), 1e-6, 1 - 1e-6))


def test_churn_fits_on_every_buyer_not_only_the_recent_ones(histories):
    """A churn population (who bought in the last 180 days) leaves out everyone who dropped out:
    fitted on it alone, BG/NBD found dropout near impossible (a = 0.002, b = 143 on one shop) and
    ranked churn worse than it can. Fitted on every buyer's history at the cutoff, it recovers
    the dropout it models and ranks the same rows better."""
    x, t_x, T, bought = histories
    frame = _frame(x, t_x, T, bought)
    active = frame[frame.recency_days <= 180].reset_index(drop=True)
    label = 1 - active.label  # churn: no purchase in the horizon
    churn = active.assign(label=label)
    history = frame[["frequency", "recency_days", "days_since_first_purchase"]]
    on_active: list = []
    on_all: list = []
    alone = bgnbd_score(churn, "churn", 30.0, on_active)
    fitted = bgnbd_score(churn, "churn", 30.0, on_all, history=history)
    assert on_all[0].a == pytest.approx(0.6, rel=0.25) and on_all[0].b == pytest.approx(3.0, rel=0.35)
    assert on_active[0].b / on_active[0].a > 2 * on_all[0].b / on_all[0].a  # the selection hides dropout
    assert roc_auc_score(label, fitted) > roc_auc_score(label, alone)
    # calibrated_baselines hands each snapshot its histories
    fits: dict = {}
    half = len(churn) // 2
    calibrated_baselines(churn[:half], churn[half:], "churn", 30.0, fits, {"valid": history, "test": history})
    assert fits["bgnbd"]["test"] == on_all[0]
