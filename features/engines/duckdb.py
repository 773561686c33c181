"""The embedded engine: Ibis over the in-process DuckDB connection holding the canonical views."""

from __future__ import annotations

import duckdb
import ibis
import ibis.expr.types as ir
import pandas as pd

from features.engines import FeatureEngine


class DuckDBEngine(FeatureEngine):
    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self._backend = ibis.duckdb.from_connection(con)

    def events(self) -> ir.Table:
        return self._backend.table("events")

    def customers(self) -> ir.Table:
        return self._backend.table("customers")

    def execute(self, expr: ir.Table) -> pd.DataFrame:
        return self._backend.execute(expr)
