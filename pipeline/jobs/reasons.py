"""Reason codes for a scoring run: the top 3 reasons behind each score of every customer who is
sendable in at least one segment (the customers an export reaches; explaining only them is what
makes reasons affordable at scale)."""

from __future__ import annotations

from typing import Any

import pandas as pd

TOP_K = 3
COLUMNS = ["customer_id", "target", "rank", "feature", "value", "log_odds", "points", "reason"]


def sendable_customers(con) -> pd.DataFrame:
    """Distinct customers sendable in at least one segment of the run (``members`` on ``con``)."""
    return con.execute("SELECT DISTINCT customer_id FROM members WHERE sendable ORDER BY customer_id").df()


def feature_rows(feats: Any, ids: pd.DataFrame) -> pd.DataFrame:
    """The feature rows of ``ids`` from the run's features (pandas on DuckDB, a Spark DataFrame on Spark)."""
    if isinstance(feats, pd.DataFrame):
        return feats[feats["customer_id"].isin(ids["customer_id"])]
    spark = feats.sparkSession
    wanted = spark.createDataFrame(ids[["customer_id"]])
    return feats.join(wanted, "customer_id", "inner").toPandas()


def run_reasons(models: dict[str, Any], base_rates: dict[str, float | None], rows: pd.DataFrame,
                scored: pd.DataFrame, currency: str = "") -> pd.DataFrame:
    """Long table (``COLUMNS``): per customer and target, ``TOP_K`` reasons, for the customers of
    ``rows`` that the target's model scored (its ``<target>_score`` in ``scored`` is not NULL).

    ``models``: target -> PropensityModel; ``base_rates``: the base rate the run moved each model
    to, so the points are on the scale of the probabilities the run reported; ``currency`` marks
    the amounts in the sentences (``currency:`` in configs/project.yaml)."""
    from models.explain import reason_codes

    out = []
    for target, model in models.items():
        keep = scored.loc[scored[f"{target}_score"].notna(), "customer_id"]
        x = rows[rows["customer_id"].isin(keep)]
        if x.empty:
            continue
        rate = base_rates.get(target)
        m = model.with_base_rate(rate) if rate is not None else model
        codes = reason_codes(m, x, target, k=TOP_K, currency=currency)
        for i in range(1, TOP_K + 1):
            part = pd.DataFrame({
                "customer_id": x["customer_id"].to_numpy(), "target": target, "rank": i,
                "feature": codes[f"reason_{i}_feature"].to_numpy(), "value": codes[f"reason_{i}_value"].to_numpy(),
                "log_odds": codes[f"reason_{i}_log_odds"].to_numpy(), "points": codes[f"reason_{i}_points"].to_numpy(),
                "reason": codes[f"reason_{i}"].to_numpy(),
            })
            out.append(part[part["reason"].notna() & (part["reason"] != "")])
    if not out:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(out, ignore_index=True)[COLUMNS]


def reasons_by_customer_sql(targets: list[str], table: str = "reasons") -> str:
    """One row per customer: ``<target>_reasons`` = the reasons joined by " | ", best first."""
    cols = ", ".join(
        f"string_agg(reason, ' | ' ORDER BY rank) FILTER (WHERE target = '{t}') AS {t}_reasons" for t in targets)
    return f"SELECT customer_id, {cols} FROM {table} GROUP BY customer_id"
