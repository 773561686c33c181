"""Data jobs: generate the demo shop, validate configured sources, load canonical data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import duckdb

from features.engine import connect
from features.identity import IdentityResolution
from features.load import build_canonical
from features.validation import ValidationReport, validate
from pipeline.config import Config
from pipeline.workspace import Workspace


class DataError(Exception):
    """Input data fails the contract; carries the full report."""

    def __init__(self, report: ValidationReport):
        self.report = report
        n = len(report.errors)
        super().__init__(f"{n} data problem{'s' if n != 1 else ''} found; nothing was written")


@dataclass
class LoadedData:
    """Validated sources as canonical views (``events``, ``customers``, ``identity_map``) on ``con``."""

    con: duckdb.DuckDBPyConnection
    report: ValidationReport
    identity: IdentityResolution
    as_of: datetime


def load_validated(cfg: Config, as_of: datetime) -> LoadedData:
    """Validate every configured source and build the canonical views; raise DataError on errors."""
    con = connect(threads=cfg.settings.threads)
    report = validate(con, cfg.source_specs(), cfg.role_of, set(cfg.roles.ignore), cfg.project_dir, as_of)
    if not report.ok:
        con.close()
        raise DataError(report)
    identity = build_canonical(con, report, cfg.role_of, cfg.settings.identity.max_ids_per_identifier)
    return LoadedData(con, report, identity, as_of)


def validate_job(cfg: Config, as_of: datetime) -> LoadedData:
    """``dynseg data validate``: check, then keep the identity map and the report in the workspace."""
    data = load_validated(cfg, as_of)
    ws = Workspace(cfg.workspace)
    ws.write_tables(data.con, {"identity_map": "SELECT * FROM identity_map"})
    ws.write_json("reports/validation.json", data.report.to_dict() | {"summary": data_summary(data)})
    return data


def data_summary(data: LoadedData) -> dict:
    """What an analyst wants to see first: who, what, when, and which ids were merged."""
    con = data.con
    customers, events, first, last = con.execute(
        "SELECT count(DISTINCT customer_id), count(*), min(ts), max(ts) FROM events"
    ).fetchall()[0]
    by_role = dict(con.execute("SELECT role, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall())
    profiles = con.execute("SELECT count(*) FROM customers").fetchall()[0][0]
    return {
        "customers_with_events": customers,
        "customer_profiles": profiles,
        "events": events,
        "first_event": first,
        "last_event": last,
        "events_by_role": by_role,
        "identity": {
            "ids_linked": len(data.identity.mapping),
            "merged_customers": data.identity.merged_customers,
            "ids_folded": data.identity.merged_ids,
            "largest_group": data.identity.largest_group,
            "skipped_identifiers": len(data.identity.skipped_identifiers),
        },
        "warnings": len(data.report.problems),
    }


def generate_job(
    out_dir: Path, customers: int, seed: int, end: str, progress: Callable[[int, int], None] | None = None
) -> dict[str, Path]:
    """``dynseg data generate``: write the synthetic shop's sources to ``out_dir``."""
    from pipeline.synthetic import generate, write

    shop = generate(customers, seed=seed, end=end, progress=progress)
    return write(shop, out_dir)
