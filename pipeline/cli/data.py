"""``dynseg data``: generate the demo shop, validate sources against the contract, simulate a campaign."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.asof import BadValue, as_of_text, now_utc, parse_as_of
from pipeline.cli.common import State, err, filled, handled, kv_table, out, progress
from pipeline.cli.render import problems_table
from pipeline.workspace import Workspace, check_writable, not_the_projects_own, write_atomic

app = typer.Typer(help="Input data: generate the demo shop, validate sources, simulate a campaign on the demo shop.",
                  no_args_is_help=True)


@app.command()
def generate(
    ctx: typer.Context,
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 7,
    end: Annotated[str, typer.Option(help="Last day of the history (UTC).")] = "2026-11-27",
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Folder (default: <workspace>/data).")] = None,
    drift_from: Annotated[Optional[str], typer.Option(help="Shift behaviour after the end of this day (UTC).")] = None,
    drift: Annotated[float, typer.Option(min=0, max=1, help="Strength of the shift, 0-1 (with --drift-from).")] = 0.0,
    force: Annotated[bool, typer.Option("--force", help="Replace events/customers/identities.parquet in the folder even when they are not generated ones.")] = False,
) -> None:
    """Write a synthetic shop (two years of events, customers, identities) as Parquet.

    With --drift-from and --drift, behaviour shifts after that day (fewer opens and organic
    orders, larger baskets, a new acquisition channel), so monitoring has real drift to find.
    """
    state: State = ctx.obj
    with handled():
        target = out_dir or Workspace(state.config().workspace).data_dir
        with progress(f"Generating {customers:,} customers", total=customers) as update:
            from pipeline.jobs.data import generate_job

            paths = generate_job(target, customers, seed, end, progress=update, drift_from=drift_from, drift=drift,
                                 force=force)
    for name, path in paths.items():
        out.print(f"wrote {name:<11} {path}", markup=False, highlight=False)


@app.command()
def validate(
    ctx: typer.Context,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="Run instant; a date means the end of that day, UTC. Default: now.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here.")] = None,
) -> None:
    """Check the configured sources against the data contract; report every problem at once."""
    state: State = ctx.obj
    with handled():
        cfg = state.config()
        instant = parse_as_of(as_of) if as_of else now_utc()
        if json_out:  # before the workspace is touched
            not_the_projects_own(cfg, json_out, "--json")
            check_writable(json_out, "validation.json", given=True)
        with progress("Validating sources") as _:
            from pipeline.jobs.data import DataError, validate_job, validation_report

            try:
                data = validate_job(cfg, instant, given=as_of is not None)
            except DataError as e:
                if json_out:  # a scheduler asked for the report: it gets the problems too
                    write_atomic(json_out, json.dumps(e.report.to_dict(), indent=2, default=str).encode())
                raise
        data.con.close()
        summary, stale = data.summary, data.run_warnings
    if data.report.problems:
        err.print(problems_table(data.report.problems))
    _print_summary(summary, {r: cfg.origin("roles.yaml", "event_roles", r) for r in summary["roles_without_events"]})
    if json_out:
        with handled():
            write_atomic(json_out, json.dumps(validation_report(data, instant), indent=2, default=str).encode())
    for w in stale:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    n = len(data.report.problems) + len(stale)
    out.print(f"[green]Sources valid[/] as of {as_of_text(instant)} ({n} warning{'s' if n != 1 else ''}).")


def _print_summary(s: dict, origins: dict[str, str] | None = None) -> None:
    out.print(kv_table("Data summary", {
        "customers with events": s["customers_with_events"],
        "customer profiles (merged ids as one)": ("none (no customers source)" if s["customer_profiles"] is None
                                                  else s["customer_profiles"]),
        "events": s["events"],
        "first event (UTC)": s["first_event"],
        "last event (UTC)": s["last_event"],
    }))
    roles = Table(title="Events by role", title_justify="left")
    roles.add_column("role")
    roles.add_column("events", justify="right")
    for role, n in s["events_by_role"].items():
        roles.add_row(role, f"{n:,}")
    for role in s["roles_without_events"]:
        roles.add_row(f"[yellow]{role}[/]", "[yellow]0[/]")
    out.print(roles)
    if s["roles_without_events"]:
        # each role named with the file that maps it (an override's, not the base file's)
        by_file: dict[str, list[str]] = {}
        for role, n in s["roles_without_events"].items():
            by_file.setdefault((origins or {}).get(role, "configs/roles.yaml"), []).append(
                f"{', '.join(map(repr, n))} to {role}")
        said = "; ".join(f"{file} maps {'; '.join(names)}" for file, names in by_file.items())
        out.print(f"[yellow]0 events[/]: {escape(said)}, and no event has such a name. "
                  "Such a role feeds no feature (its columns are left out, or read 0 for everyone where another role "
                  "keeps their group): if your log records it under another name, map that name instead; if it "
                  "records none, the line can go.")
    i = s["identity"]
    out.print(kv_table("Identity resolution", {
        "ids in identities": i["ids_linked"],
        "canonical customers formed from 2+ ids": i["merged_customers"],
        "ids folded into another": i["ids_folded"],
        "largest merged group": i["largest_group"],
        "identifiers skipped as too common": i["skipped_identifiers"],
    }))
    if i.get("skipped_examples"):
        out.print("Skipped as too common (shared by more than identity.max_ids_per_identifier ids): "
                  + "; ".join(i["skipped_examples"]), highlight=False)


@app.command("simulate-campaign")
def simulate_campaign(
    ctx: typer.Context,
    run: Annotated[Optional[str], typer.Option(help="Scoring run id whose segments were sent a campaign.")] = None,
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="Or: the scoring run as of this date.")] = None,
    uplift: Annotated[float, typer.Option(min=0, max=1, help="Share of treated non-buyers the campaign converts.")] = 0.05,
    segment: Annotated[Optional[list[str]], typer.Option(help="Segments sent to (repeat; default: every segment with a holdout).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Demo data only: add the orders a campaign to a run's sendable members would have caused.

    Holdout members get nothing, so `dynseg lift` has a real effect to find. Rewrites the events
    Parquet file of the demo shop (atomically).
    """
    from pipeline.jobs.data import simulate_campaign_job

    state: State = ctx.obj
    with handled():
        if not (run or as_of):
            raise BadValue("name the scoring run: --run RUN_ID or --as-of DATE")
        c = simulate_campaign_job(state.config(), run, uplift, segment, seed, parse_as_of(as_of) if as_of else None)
    out.print(f"campaign after run {c.run_id} ({c.as_of:%Y-%m-%d %H:%M}): {c.treated:,} treated members of "
              f"{', '.join(c.segments)}; {c.events_added:,} events added in the {c.horizon_days}-day window to "
              f"{c.events_path}")
