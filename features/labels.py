"""Labels: what happens after the cutoff. ``purchase`` and ``churn``, both over a horizon H.

A label as of T looks only at events with ``T <= ts < T + H`` (features see ``ts < T``; the two
windows meet at T without a gap, so no event is lost or seen twice).

* **purchase**: 1 if the customer makes at least one purchase in ``[T, T + H)``. Population:
  every customer known at T (``known``), or only those active at T (``active``).
* **churn**: 1 if a customer who was **active** at T (a purchase in ``[T − A, T)``) makes no
  purchase in ``[T, T + H)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import ibis
import ibis.expr.types as ir

from features.customer_features import utc, visible_events


@dataclass(frozen=True)
class LabelSpec:
    target: Literal["purchase", "churn"]
    horizon: timedelta
    population: Literal["known", "active"] = "known"
    active_window: timedelta = timedelta(days=180)

    def __post_init__(self) -> None:
        if self.target == "churn" and self.population != "active":
            raise ValueError("churn is defined over customers active at the cutoff: population must be 'active'")

    def describe(self) -> str:
        """The definition in words, for the model card and the CLI."""
        def days(n: int) -> str:
            return "day" if n == 1 else f"{n} days"

        h, a = days(self.horizon.days), days(self.active_window.days)
        who = (f"customers with a purchase in the {a} before the cutoff" if self.population == "active"
               else "every customer known at the cutoff (signed up or any event before it)")
        if self.target == "purchase":
            return f"purchase = at least one purchase in the {h} from the cutoff; population: {who}"
        return f"churn = no purchase in the {h} from the cutoff; population: {who}"


def label_window(events: ir.Table, as_of: datetime, horizon: timedelta) -> ir.Table:
    """Events a label as of ``as_of`` may see: from ``as_of`` (inclusive) to ``as_of + horizon``."""
    as_of = utc(as_of)
    start = ibis.literal(as_of, type="timestamp")
    end = ibis.literal(as_of + horizon, type="timestamp")
    return events.filter((events.ts >= start) & (events.ts < end))


def labels(population: ir.Table, events: ir.Table, as_of: datetime, spec: LabelSpec) -> ir.Table:
    """``customer_id, label`` for the customers of ``population`` (a table with ``customer_id``)
    who are eligible at ``as_of``."""
    as_of = utc(as_of)
    if spec.population == "active":
        past = visible_events(events, as_of)
        since = ibis.literal(as_of - spec.active_window, type="timestamp")
        active = past.filter((past.role == "purchase") & (past.ts >= since)).select("customer_id").distinct()
        population = population.semi_join(active, "customer_id")
    future = label_window(events, as_of, spec.horizon)
    buyers = future.filter(future.role == "purchase").select("customer_id").distinct().mutate(bought=ibis.literal(1))
    j = population.select("customer_id").left_join(buyers, "customer_id")
    bought = j.bought.notnull()
    label = bought if spec.target == "purchase" else ~bought
    return j.select(customer_id=j.customer_id, label=label.cast("int8"))
