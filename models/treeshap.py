"""Exact TreeSHAP values of a LightGBM binary model, fast enough to explain every scored customer.

LightGBM's ``pred_contrib=True`` runs path-dependent TreeSHAP (Lundberg et al. 2020, Algorithm 2):
for every row and tree it walks all leaves and unwinds a permutation polynomial, about 4 ms per
row for the 400-tree churn model of ``bench/explain.py`` on one core here. This module returns
the same numbers (to float rounding) 15-18 times faster, by doing the polynomial work once per
model instead of once per row. The kernels are compiled by numba on first use (about 15 s) and
cached beside this file.

For one leaf with value ``v`` whose path splits on ``d`` distinct features, each with a *zero
fraction* ``z_j`` (the product of the cover ratios of that feature's splits on the path), a row's
contribution to feature ``k`` depends on the row only through the set ``A`` of path features
whose value satisfies all of that feature's splits on the path (as in Fast TreeSHAP v2, Yang
2021)::

    k in A:      (1 - z_k) * Z(A) * G(A - {k})        Z(A) = v * prod_{j not in A} z_j
    k not in A:       - Z(A) * G(A)                   G(S) = sum_s w(s, d) e_{|S|-s}(z_S)

with ``w(s, d) = s! (d-s-1)! / d!`` and ``e_i`` the elementary symmetric polynomials. So each leaf
gets a table of ``G`` and ``Z`` over its ``2**d`` subsets, built once per model; a row then costs,
per leaf, ``d`` interval tests and ``d`` table look-ups. Rows go in blocks, leaf by leaf, so a
leaf's table stays in cache while the block uses it. Leaves whose tables would not fit the memory
budget are computed per row instead (same formula, no table).

Supported: binary models with one tree per iteration, numerical splits with missing values
``None`` or ``NaN`` (LightGBM's defaults) and categorical splits that name codes below 63.
Anything else raises ``NotImplementedError`` so the caller falls back to ``pred_contrib``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

_OTHER = 63  # category codes at or above this share the last bit of a mask (no split names them)
_ALL = (1 << 64) - 1
_BLOCK = 512  # rows per block: a block's features and contributions stay in L2


@dataclass(frozen=True)
class CompiledTrees:
    """A model's leaves as flat arrays: per leaf its value and distinct path features; per
    (leaf, feature) the zero fraction and the test a row must pass (interval, category mask,
    missing-value outcome); per leaf with a table its offset into ``tables``, else -1."""

    n_features: int
    expected_value: float  # the raw score averaged over the training rows by cover: SHAP's base value
    leaf_value: np.ndarray
    leaf_d: np.ndarray
    leaf_start: np.ndarray  # first (leaf, feature) entry of each leaf; one extra at the end
    feature: np.ndarray
    zero_fraction: np.ndarray
    weight: np.ndarray  # w(s, d) for s = 0..d-1, stored beside the leaf's entries
    low: np.ndarray  # the test is low < x <= high ...
    high: np.ndarray
    category_mask: np.ndarray  # ... or, for a categorical entry, bit x of the mask is set
    is_categorical: np.ndarray
    missing_ok: np.ndarray  # where a missing value goes does not depend on the row
    table_start: np.ndarray
    tables: np.ndarray

    @property
    def table_bytes(self) -> int:
        return int(self.tables.nbytes)


def compile_trees(dump: dict, num_iteration: int, n_features: int, table_budget_bytes: int = 256 << 20) -> CompiledTrees:
    """Flatten ``Booster.dump_model()`` (first ``num_iteration`` trees) and build the leaf tables
    (smallest leaves first, up to ``table_budget_bytes``; the rest are computed per row)."""
    if dump.get("num_tree_per_iteration", 1) != 1:
        raise NotImplementedError(f"fast TreeSHAP handles one tree per iteration; this model has {dump['num_tree_per_iteration']}")
    leaves: list[tuple[float, list]] = []
    for tree in dump["tree_info"][:num_iteration]:
        _collect_leaves(tree["tree_structure"], [], leaves)
    d, start, entries, weights = [], [0], [], []
    for _, path in leaves:
        by_feature: dict[int, list] = {}
        for node, went_left, ratio in path:
            by_feature.setdefault(node["split_feature"], []).append((node, went_left, ratio))
        d.append(len(by_feature))
        weights += [math.factorial(s) * math.factorial(d[-1] - s - 1) / math.factorial(d[-1]) for s in range(d[-1])]
        entries += [(f, *_feature_test(splits)) for f, splits in by_feature.items()]
        start.append(len(entries))
    d_arr = np.asarray(d, np.int64)
    if d_arr.max(initial=0) > 62:
        raise NotImplementedError(f"fast TreeSHAP handles paths through at most 62 features; found {d_arr.max()}")
    table_start, table_size = _table_layout(d_arr, table_budget_bytes)
    feat, zf, lo, hi, mask, is_cat, nan_ok = (list(c) for c in zip(*entries)) if entries else ([],) * 7
    trees = CompiledTrees(
        n_features=n_features, expected_value=math.fsum(v * math.prod(r for *_, r in path) for v, path in leaves),
        leaf_value=np.asarray([v for v, _ in leaves], float), leaf_d=d_arr, leaf_start=np.asarray(start, np.int64),
        feature=np.asarray(feat, np.int64), zero_fraction=np.asarray(zf, float), weight=np.asarray(weights, float),
        low=np.asarray(lo, float), high=np.asarray(hi, float), category_mask=np.asarray(mask, np.uint64).view(np.int64),
        is_categorical=np.asarray(is_cat, bool), missing_ok=np.asarray(nan_ok, bool), table_start=table_start,
        tables=np.empty(table_size, float),
    )
    _build_tables(trees.leaf_value, trees.leaf_d, trees.leaf_start, trees.zero_fraction, trees.weight,
                  trees.table_start, trees.tables)
    return trees


def shap_values(trees: CompiledTrees, X: np.ndarray) -> np.ndarray:
    """TreeSHAP values (log-odds) of each row of ``X`` (LightGBM's matrix: float64, categories as
    codes, NaN for missing), one column per feature; the expected value is not included."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != trees.n_features:
        raise ValueError(f"expected a matrix with {trees.n_features} feature columns; got shape {X.shape}")
    return _shap_blocks(X, trees.leaf_value, trees.leaf_d, trees.leaf_start, trees.feature, trees.zero_fraction,
                        trees.weight, trees.low, trees.high, trees.category_mask, trees.is_categorical,
                        trees.missing_ok, trees.table_start, trees.tables, _BLOCK)


# -- reading the dump -----------------------------------------------------------------------
def _collect_leaves(node: dict, path: list, out: list) -> None:
    """Depth first: each leaf with its path of (split node, went left, cover ratio of the child)."""
    if "split_index" not in node:
        if "leaf_coeff" in node:
            raise NotImplementedError("fast TreeSHAP does not handle linear trees")
        out.append((float(node["leaf_value"]), path))
        return
    if node["decision_type"] not in ("<=", "=="):
        raise NotImplementedError(f"fast TreeSHAP does not handle decision type {node['decision_type']!r}")
    if node["missing_type"] == "Zero":
        raise NotImplementedError("fast TreeSHAP does not handle zero-as-missing splits")
    if node["decision_type"] == "==" and max(_categories(node)) >= _OTHER:
        raise NotImplementedError(f"fast TreeSHAP handles categorical splits on codes below {_OTHER}")
    for side, left in (("left_child", True), ("right_child", False)):
        child = node[side]
        count = child.get("internal_count", child.get("leaf_count"))
        _collect_leaves(child, path + [(node, left, count / node["internal_count"])], out)


def _feature_test(splits: list) -> tuple:
    """One feature's splits on a leaf's path -> (zero fraction, low, high, category mask,
    categorical?, does a missing value follow the path?): a value follows the path on this
    feature when ``low < x <= high`` (numerical) or its code's bit is set in the mask."""
    z, low, high, mask, categorical, missing_ok = 1.0, -math.inf, math.inf, _ALL, False, True
    for node, went_left, ratio in splits:
        z *= ratio
        missing_ok &= _goes_left(node, math.nan) == went_left
        if node["decision_type"] == "==":
            categorical = True
            members = sum(1 << c for c in _categories(node))
            mask &= members if went_left else _ALL & ~members
        elif went_left:
            high = min(high, float(node["threshold"]))
        else:
            low = max(low, float(node["threshold"]))
    return z, low, high, mask, categorical, missing_ok


def _table_layout(d: np.ndarray, budget_bytes: int) -> tuple[np.ndarray, int]:
    """Where each leaf's table starts in the flat table array (-1: no table), and its length.
    A table holds G and Z for each of the 2**d subsets; small tables go first."""
    size = np.where(d > 0, 2 << np.minimum(d, 40), 0)
    order = np.argsort(d, kind="stable")
    fits = np.zeros(len(d), bool)
    fits[order[np.cumsum(size[order]) * 8 <= budget_bytes]] = True
    fits &= d > 0  # a tree without splits adds only to the expected value
    start = np.full(len(d), -1, np.int64)
    start[fits] = np.concatenate([[0], np.cumsum(size[fits])[:-1]]) if fits.any() else []
    return start, int(size[fits].sum())


def _categories(node: dict) -> list[int]:
    return [int(c) for c in str(node["threshold"]).split("||")]


def _goes_left(node: dict, x: float) -> bool:
    """LightGBM's decision (tree.h, NumericalDecision / CategoricalDecision) for one value."""
    if node["decision_type"] == "==":
        return not (math.isnan(x) or x < 0) and int(x) in _categories(node)
    if math.isnan(x):
        if node["missing_type"] == "NaN":
            return bool(node["default_left"])
        x = 0.0
    return x <= node["threshold"]


# -- kernels --------------------------------------------------------------------------------
@numba.njit(cache=True)
def _g_and_z(bits, d, z, w, v, zs, e):
    """For the subset ``bits`` of a leaf's d features: G(subset) and Z(subset) (see module doc)."""
    a = 0
    zb = v
    for k in range(d):
        if (bits >> k) & 1:
            zs[a] = z[k]
            a += 1
        else:
            zb *= z[k]
    e[0] = 1.0
    for j in range(1, a + 1):
        e[j] = 0.0
    for m in range(a):
        for j in range(m + 1, 0, -1):
            e[j] += zs[m] * e[j - 1]
    g = 0.0
    for s in range(min(a + 1, d)):  # G of all d features is never used (and would need w(d, d))
        g += w[s] * e[a - s]
    return g, zb


@numba.njit(cache=True, parallel=True)
def _build_tables(leaf_value, leaf_d, leaf_start, zero_fraction, weight, table_start, tables):
    for leaf in numba.prange(len(leaf_d)):
        to = table_start[leaf]
        if to < 0 or leaf_d[leaf] == 0:
            continue
        d, fo = leaf_d[leaf], leaf_start[leaf]
        zs, e = np.empty(d + 1), np.empty(d + 2)
        for bits in range(1 << d):
            g, zb = _g_and_z(bits, d, zero_fraction[fo:fo + d], weight[fo:fo + d], leaf_value[leaf], zs, e)
            tables[to + 2 * bits] = g
            tables[to + 2 * bits + 1] = zb


@numba.njit(cache=True)
def _leaf_direct(bits, d, z, w, v, zs, e, out):
    """The same contributions as a table look-up, computed for one row (leaves without a table):
    G(A - {k}) by dividing the polynomial of A by (z_k + t)."""
    g, zb = _g_and_z(bits, d, z, w, v, zs, e)
    a = 0
    for k in range(d):
        a += (bits >> k) & 1
    m = 0
    for k in range(d):
        if (bits >> k) & 1:
            zk = zs[m]
            m += 1
            ep = 1.0
            gk = w[a - 1]
            for j in range(1, a):
                ep = e[j] - zk * ep
                gk += w[a - 1 - j] * ep
            out[k] = (1.0 - zk) * zb * gk
        else:
            out[k] = -zb * g


@numba.njit(cache=True, parallel=True)
def _shap_blocks(X, leaf_value, leaf_d, leaf_start, feature, zero_fraction, weight, low, high, category_mask,
                 is_categorical, missing_ok, table_start, tables, block):
    n, p = X.shape
    out = np.empty((n, p))
    for b in numba.prange((n + block - 1) // block):
        r0 = b * block
        m = min(n, r0 + block) - r0
        xt = np.ascontiguousarray(X[r0:r0 + m].T)
        phi = np.zeros((p, m))
        bits = np.empty(m, np.int64)
        zb = np.empty(m)
        zs, e, one = np.empty(64), np.empty(65), np.empty(64)
        for leaf in range(len(leaf_d)):
            d, fo = leaf_d[leaf], leaf_start[leaf]
            if d == 0:
                continue
            bits[:] = 0
            for k in range(d):
                q = fo + k
                xs = xt[feature[q]]
                nan_bit = np.int64(missing_ok[q])
                if is_categorical[q]:
                    mask = category_mask[q]
                    for r in range(m):
                        x = xs[r]
                        if x != x:
                            bits[r] |= nan_bit << k
                        else:
                            c = np.int64(x) if 0 <= x < _OTHER else _OTHER  # negative: in no category (LightGBM)
                            bits[r] |= ((mask >> c) & 1) << k
                else:
                    lo, hi = low[q], high[q]
                    for r in range(m):
                        x = xs[r]
                        bits[r] |= ((np.int64(x > lo) & np.int64(x <= hi)) | (np.int64(x != x) & nan_bit)) << k
            to = table_start[leaf]
            if to >= 0:
                for r in range(m):
                    zb[r] = tables[to + 2 * bits[r] + 1]
                for k in range(d):
                    row = phi[feature[fo + k]]
                    c1 = 2.0 - zero_fraction[fo + k]
                    for r in range(m):
                        bk = (bits[r] >> k) & 1
                        row[r] += zb[r] * (bk * c1 - 1.0) * tables[to + 2 * (bits[r] ^ (bk << k))]
            else:
                for r in range(m):
                    _leaf_direct(bits[r], d, zero_fraction[fo:fo + d], weight[fo:fo + d], leaf_value[leaf], zs, e, one)
                    for k in range(d):
                        phi[feature[fo + k], r] += one[k]
        out[r0:r0 + m] = phi.T
    return out
