"""BG/NBD, the buy-till-you-die model of ``lifetimes`` and PyMC-Marketing, as a baseline.

Fader, Hardie & Lee (2005), "Counting your customers the easy way". While alive, a customer buys
at a Poisson rate λ; after each repeat purchase she drops out for good with probability p. Across
customers λ ~ Gamma(r, α) and p ~ Beta(a, b). A customer's history as of a cutoff is three numbers,
in days counted from her first purchase: ``x`` repeat purchases, ``t_x`` the last purchase and
``T`` the cutoff. The four parameters are fitted by maximum likelihood on those histories alone:
nothing after the cutoff is read, so fitting on a snapshot's own customers leaks no label.

What the labels ask, in closed form: given alive at T, her rate is Gamma(r + x, α + T), and no
purchase in (T, T + t] has probability ((α + T) / (α + T + t))^(r + x) (dropping out needs a
purchase first), so

    P(at least one purchase in (T, T + t]) = P(alive at T) * (1 - ((α + T) / (α + T + t))^(r + x))
    P(alive at T) = 1 / (1 + [x > 0] * a / (b + x - 1) * ((α + T) / (α + t_x))^(r + x))

Customers who never bought have no history for the model (it starts at the first purchase); the
caller decides what they get (:func:`models.evaluation.bgnbd_score` leaves them unscored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln

#: customers the fit reads at most (a seeded sample beyond): the four parameters are as precise
#: from 50,000 histories as from a million, and the fit stays under a second
MAX_FIT_ROWS = 50_000


@dataclass(frozen=True)
class BGNBD:
    r: float
    alpha: float
    a: float
    b: float

    def _log_ratio(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
        """log of a / (b + x - 1) * ((α + T) / (α + t_x))^(r + x), -inf where x = 0."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-300))
                   + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        return np.where(x > 0, out, -np.inf)

    def p_alive(self, x, t_x, T) -> np.ndarray:
        x, t_x, T = (np.asarray(v, float) for v in (x, t_x, T))
        return np.exp(-np.logaddexp(0.0, self._log_ratio(x, t_x, T)))

    def p_purchase(self, x, t_x, T, t: float) -> np.ndarray:
        """P(at least one purchase in (T, T + t]) for each history."""
        x, t_x, T = (np.asarray(v, float) for v in (x, t_x, T))
        none_if_alive = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + T + t)))
        return self.p_alive(x, t_x, T) * (1.0 - none_if_alive)


def log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Each history's log-likelihood under (r, α, a, b) (FHL 2005, equation 6)."""
    r, alpha, a, b = params
    base = (gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
            - (r + x) * np.log(alpha + T))
    return base + np.logaddexp(0.0, BGNBD(r, alpha, a, b)._log_ratio(x, t_x, T))


def fit(x, t_x, T, seed: int = 0, max_rows: int = MAX_FIT_ROWS) -> BGNBD:
    """Maximum-likelihood (r, α, a, b) from histories in days since the first purchase.

    Raises ValueError when there is nothing to fit (no customer with a repeat purchase)."""
    x, t_x, T = (np.asarray(v, float) for v in (x, t_x, T))
    ok = np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T) & (x >= 0) & (T >= t_x) & (t_x >= 0)
    x, t_x, T = x[ok], t_x[ok], T[ok]
    if not (x > 0).any():
        raise ValueError(f"BG/NBD needs customers with a repeat purchase; none among {len(x)} histories")
    if len(x) > max_rows:
        keep = np.random.default_rng(seed).choice(len(x), max_rows, replace=False)
        x, t_x, T = x[keep], t_x[keep], T[keep]
    n = len(x)

    def loss(theta: np.ndarray) -> float:
        value = -log_likelihood(np.exp(theta), x, t_x, T).sum() / n
        return float(value) if np.isfinite(value) else 1e10

    start = np.log([1.0, max(float(np.mean(T)), 1.0), 1.0, 1.0])
    best = minimize(loss, start, method="L-BFGS-B", bounds=[(-9.0, 9.0), (-9.0, 12.0), (-9.0, 9.0), (-9.0, 9.0)])
    return BGNBD(*(float(v) for v in np.exp(best.x)))
