"""The propensity model: LightGBM on point-in-time features, calibrated on a later snapshot.

``fit`` learns trees on the training snapshots with early stopping on the validation snapshot,
then a calibrator (Platt or isotonic, chosen on validation) maps raw scores to probabilities.
``predict_proba`` returns calibrated probabilities at the base rate of the validation snapshot,
or, after :meth:`with_base_rate`, at the base rate expected where the model is used.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from models.calibration import choose_calibrator, shift_prior

#: Columns that identify a row rather than describe a customer.
KEY_COLUMNS = ("customer_id", "as_of", "snapshot", "label")
#: Threads for prediction (training stays single-threaded, so it is reproducible bit for bit).
PREDICT_THREADS = os.cpu_count() or 1


def _is_categorical(s: pd.Series) -> bool:
    """Text columns are categories; booleans (even with nulls, as object) and numbers are numeric."""
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return False
    if pd.api.types.is_string_dtype(s) and s.dtype != object:
        # pandas' string dtypes: text; one all null is no category, as an all-null object column
        # (asking its values whether they are flags failed on these dtypes)
        return bool(s.notna().any())
    return not s.dropna().map(lambda v: isinstance(v, (bool, np.bool_))).all()


def feature_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in KEY_COLUMNS]


class PropensityModel(BaseEstimator):
    """Calibrated LightGBM propensity of a binary outcome (purchase, churn)."""

    def __init__(
        self,
        n_estimators: int = 1000,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 50,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 1.0,
        early_stopping_rounds: int = 50,
        calibration: str = "auto",
        random_state: int = 0,
        n_jobs: int = 1,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.calibration = calibration
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- data preparation -------------------------------------------------------------------
    def missing_features(self, columns: Iterable[str]) -> list[str]:
        """The features the model was trained on that ``columns`` lack, in the model's order."""
        have = set(columns)
        return [c for c in self.features_ if c not in have]

    def _matrix(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = self.missing_features(X.columns)
        if missing:
            raise ValueError(f"input lacks {len(missing)} feature column(s) the model was trained on: {missing[:10]}")
        out = {}
        for c in self.features_:
            s = X[c]
            if c in self.categories_:
                s = s.astype("string")  # vectorised str() of every present value; missing stays missing
                known = self.categories_[c]
                out[c] = pd.Categorical(s.where(s.isin(known)), categories=known)  # unseen values -> missing
            elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
                out[c] = s.to_numpy(dtype="float64", na_value=np.nan)
            else:
                out[c] = pd.to_numeric(s.astype("object").where(s.notna(), np.nan), errors="coerce").astype("float64")
        return pd.DataFrame(out, index=X.index)

    def _learn_schema(self, X: pd.DataFrame) -> None:
        self.features_ = feature_columns(X)
        self.categories_ = {
            c: sorted(X[c].dropna().astype(str).unique().tolist()) for c in self.features_ if _is_categorical(X[c])
        }

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y, X_valid: pd.DataFrame, y_valid, valid_groups=None) -> PropensityModel:
        y, y_valid = np.asarray(y, int), np.asarray(y_valid, int)
        for name, labels in (("training", y), ("validation", y_valid)):
            if len(np.unique(labels)) < 2:
                raise ValueError(f"the {name} rows hold only class {np.unique(labels).tolist()}; both classes are needed")
        self._learn_schema(X)
        Xm, Xv = self._matrix(X), self._matrix(X_valid)
        self.booster_ = lgb.LGBMClassifier(
            objective="binary", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=self.min_child_samples, subsample=self.subsample,
            subsample_freq=1, colsample_bytree=self.colsample_bytree, reg_lambda=self.reg_lambda,
            random_state=self.random_state, n_jobs=self.n_jobs, verbose=-1,
        ).fit(
            Xm, y, eval_X=(Xv,), eval_y=(y_valid,), eval_metric="binary_logloss",
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        self.best_iteration_ = int(self.booster_.best_iteration_ or self.n_estimators)
        raw_valid = self.decision_function(X_valid)
        groups = valid_groups if valid_groups is not None else np.arange(len(y_valid))
        self.calibrator_, self.calibration_briers_ = choose_calibrator(raw_valid, y_valid, np.asarray(groups), self.calibration)
        self.calibrated_base_rate_ = float(y_valid.mean())
        self.target_base_rate_ = self.calibrated_base_rate_
        return self

    # -- prediction -------------------------------------------------------------------------
    def trees_text(self) -> str:
        """The number of trees and how it was reached: by early stopping, or at the ``n_estimators``
        ceiling (the validation loss still fell at the last tree: the model may want more)."""
        n = self.best_iteration_
        if n >= self.n_estimators:
            return (f"{n} (the n_estimators ceiling, not early stopping: the validation loss still fell at the last "
                    "tree; raise n_estimators in configs/training.yaml)")
        return f"{n} (early stopping on validation, of at most {self.n_estimators})"

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Raw score in log-odds (before calibration): what SHAP values add up to."""
        return self.booster_.predict(self._matrix(X), raw_score=True, num_iteration=self.best_iteration_,
                                     num_threads=PREDICT_THREADS)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the outcome, one per row."""
        return self.probability_from_raw(self.decision_function(X))

    def probability_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """Raw scores (log-odds, as from :meth:`decision_function`) -> calibrated probabilities at
        the model's target base rate: the mapping ``predict`` applies."""
        p = self.calibrator_.predict(raw)
        if abs(self.target_base_rate_ - self.calibrated_base_rate_) > 1e-12:
            p = shift_prior(p, self.calibrated_base_rate_, self.target_base_rate_)
        return p

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.predict(X)
        return np.column_stack([1 - p, p])

    def with_base_rate(self, rate: float) -> PropensityModel:
        """A copy whose probabilities are moved to the base rate ``rate`` (prior-shift correction)."""
        if not 0 < rate < 1:
            raise ValueError(f"base rate must lie strictly between 0 and 1; got {rate}")
        other = copy.copy(self)
        other.target_base_rate_ = float(rate)
        return other

    @property
    def calibration_method_(self) -> str:
        return self.calibrator_.method

    def feature_importance(self) -> pd.DataFrame:
        b = self.booster_.booster_
        return pd.DataFrame({
            "feature": self.features_,
            "gain": b.feature_importance("gain", iteration=self.best_iteration_),
            "splits": b.feature_importance("split", iteration=self.best_iteration_),
        }).sort_values("gain", ascending=False, ignore_index=True)


__all__ = ["PREDICT_THREADS", "PropensityModel", "feature_columns", "KEY_COLUMNS"]
