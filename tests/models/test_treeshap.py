"""models/treeshap.py against LightGBM's pred_contrib and against a brute-force Shapley oracle."""

from __future__ import annotations

import itertools
import math

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from models import treeshap


def _booster(X, y, categorical=(), rounds=40, **params) -> lgb.Booster:
    data = lgb.Dataset(X, y, categorical_feature=list(categorical) or "auto", free_raw_data=False)
    return lgb.train({"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 10, "verbose": -1,
                      "learning_rate": 0.1, **params}, data, rounds)


def _data(rng, n=3000):
    X = np.column_stack([
        rng.normal(size=n),                                   # no missing values at training
        np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),  # missing values at training
        rng.integers(0, 5, n).astype(float),                  # categorical codes
        (rng.random(n) < 0.3).astype(float),                  # a flag
    ])
    logit = X[:, 0] - np.nan_to_num(X[:, 1], nan=1.5) + (X[:, 2] == 3) * 1.5 - X[:, 3]
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


@pytest.mark.parametrize("budget", [256 << 20, 0, 20_000], ids=["tables", "per-row", "mixed"])
def test_equals_pred_contrib_with_categories_and_missing_values(budget):
    rng = np.random.default_rng(1)
    X, y = _data(rng)
    booster = _booster(X, y, categorical=[2])
    trees = treeshap.compile_trees(booster.dump_model(), booster.num_trees(), X.shape[1], table_budget_bytes=budget)
    assert (budget == 0) == (trees.table_bytes == 0)
    test, _ = _data(np.random.default_rng(2), 2000)
    test[:100, 0] = np.nan  # missing where training had none: LightGBM reads 0.0
    test[100:200, 2] = np.nan  # missing category
    test[200:250, 2] = 9  # a category never seen in training
    test[250:300, 2] = -1  # a negative code: LightGBM treats it as no category
    ref = booster.predict(test, pred_contrib=True)
    np.testing.assert_allclose(treeshap.shap_values(trees, test), ref[:, :-1], rtol=0, atol=1e-9)
    assert trees.expected_value == pytest.approx(ref[0, -1], abs=1e-12)


def test_equals_a_brute_force_shapley_oracle():
    """Path-dependent TreeSHAP by definition: E[f(x) | x_S] follows x where the split feature is
    in S and averages both children by cover elsewhere; Shapley values by enumerating subsets."""
    rng = np.random.default_rng(3)
    X, y = _data(rng, 600)
    booster = _booster(X, y, rounds=4, num_leaves=6)
    dump = booster.dump_model()
    trees = treeshap.compile_trees(dump, 4, X.shape[1])
    rows = X[:25]
    p = X.shape[1]

    def expect(node, x, S):
        if "split_index" not in node:
            return node["leaf_value"]
        if node["split_feature"] in S:
            left = _lightgbm_goes_left(node, x[node["split_feature"]])
            return expect(node["left_child"] if left else node["right_child"], x, S)
        n = node["internal_count"]
        return sum(expect(node[c], x, S) * _count(node[c]) / n for c in ("left_child", "right_child"))

    for x in rows:
        phi = np.zeros(p)
        for tree in dump["tree_info"]:
            for i in range(p):
                others = [j for j in range(p) if j != i]
                for size in range(p):
                    for S in itertools.combinations(others, size):
                        w = math.factorial(size) * math.factorial(p - size - 1) / math.factorial(p)
                        phi[i] += w * (expect(tree["tree_structure"], x, set(S) | {i}) - expect(tree["tree_structure"], x, set(S)))
        np.testing.assert_allclose(treeshap.shap_values(trees, x[None, :])[0], phi, rtol=0, atol=1e-12)


def test_unsupported_models_are_refused_by_name():
    rng = np.random.default_rng(4)
    X, y = _data(rng, 1000)
    booster = _booster(np.nan_to_num(X), y, rounds=5, zero_as_missing=True)
    with pytest.raises(NotImplementedError, match="zero-as-missing"):
        treeshap.compile_trees(booster.dump_model(), 5, X.shape[1])


def test_rejects_a_matrix_of_the_wrong_width():
    rng = np.random.default_rng(5)
    X, y = _data(rng, 500)
    booster = _booster(X, y, rounds=3)
    trees = treeshap.compile_trees(booster.dump_model(), 3, X.shape[1])
    with pytest.raises(ValueError, match="4 feature columns"):
        treeshap.shap_values(trees, pd.DataFrame(X).iloc[:, :3].to_numpy())


def _count(node) -> int:
    return node.get("internal_count", node.get("leaf_count"))


def _lightgbm_goes_left(node, x) -> bool:
    if node["decision_type"] == "==":
        return not (math.isnan(x) or x < 0) and int(x) in {int(c) for c in str(node["threshold"]).split("||")}
    if math.isnan(x):
        if node["missing_type"] == "NaN":
            return node["default_left"]
        x = 0.0
    return x <= node["threshold"]
