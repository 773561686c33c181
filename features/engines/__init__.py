"""Engines that execute feature definitions: one interface, chosen by ``engine:`` in config.

``duckdb`` (embedded, default) runs on the canonical views of an in-process DuckDB connection.
``spark`` runs the same Ibis expressions on a Spark session (local mode or a cluster).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime

import ibis.expr.types as ir
import pandas as pd


class FeatureEngine(ABC):
    name: str

    @abstractmethod
    def events(self) -> ir.Table: ...

    @abstractmethod
    def customers(self) -> ir.Table: ...

    def consents(self) -> ir.Table | None:
        """Every profile row of merged customers (``consent_profiles``: the canonical customer_id,
        the row's own ``_row_id``, signup_at, email_consent, consent_updated_at and the attributes),
        whose consent decisions and attributes the features take as of T; None when no profiles
        were merged."""
        return None

    @abstractmethod
    def execute(self, expr: ir.Table) -> pd.DataFrame: ...

    def at_cutoffs(self, build: Callable[[datetime], ir.Table]) -> Callable[[datetime], pd.DataFrame]:
        """A function giving ``build(as_of)``'s result at any cutoff: for a training set's
        snapshots, which differ only in their cutoff. Here each call builds and runs the
        expression; an engine may compile it once (see the DuckDB engine)."""
        return lambda as_of: self.execute(build(as_of))

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


__all__ = ["FeatureEngine"]
