"""``dynseg features``: build the point-in-time feature set, describe the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from features.asof import as_of_file_label, as_of_label, as_of_text, cutoff_label, parse_as_of
from features.customer_features import DOCS, catalog
from pipeline.cli.common import (Engine, State, engine_name, err, filled, handled, kv_table, out, snapshot_steps,
                                 staged_progress, stages)
from pipeline.cli.train import Target
from pipeline.workspace import Workspace, check_writable

app = typer.Typer(help="Point-in-time customer features.", no_args_is_help=True)


@app.command()
def build(
    ctx: typer.Context,
    as_of: Annotated[str, typer.Option(callback=filled, help="Cutoff; a date means the end of that day, UTC. Features see only events before it.")],
    engine: Annotated[Optional[Engine], typer.Option(help="duckdb (default from config) or spark.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Parquet or CSV file, by its suffix; by default customer_features_<as_of>.parquet in <workspace>/features.")] = None,
) -> None:
    """Compute customer_features as of a cutoff and write them to a file."""
    state: State = ctx.obj
    with handled():
        cfg = state.config()
        instant = parse_as_of(as_of)
        # named like the as_of: customer_features_2026-11-27.parquet is as of the end of that day
        label = as_of_file_label(instant)
        target = out_path or Workspace(cfg.workspace).root / "features" / f"customer_features_{label}.parquet"
        if out_path is None:
            _default_writable(target)
        # (a spinner with the stage on a terminal; a line per stage in a scheduler's log, where the
        # bar printed nothing for a minute of Spark). Named by the date given, as the summary says it
        with stages(f"features as of {as_of_label(instant)}") as say:
            from pipeline.jobs.features import build_features_job

            run = build_features_job(cfg, instant, engine_name(engine), target, say=say)
    for w in run.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    missing = run.profile.missing_groups()
    if missing:
        err.print(f"[yellow]Feature groups unavailable in this data:[/] {', '.join(missing)} "
                  "(their roles, columns or profile fields are absent before the cutoff; see features/customer_features.md)")
    table = run.arrow()
    rows = {
        "as of": as_of_text(instant),
        "engine": run.engine,
        "customers": table.num_rows,
        "features": table.num_columns - 2,
        "groups": ", ".join(run.profile.groups()),
    }
    if "customers" in cfg.source_specs():
        # which profile columns became features, and why (categorical_attributes in configs/features.yaml)
        how = "auto" if cfg.features.categorical_attributes == "auto" else "listed"
        rows["attributes"] = f"{', '.join(run.profile.categorical) or 'none'} ({how})"
    rows["written to"] = run.path
    out.print(kv_table("Features built", rows))
    out.print(_preview(table))


def _preview(table) -> Table:
    """Non-null share, mean, min and max of the first 25 features, computed on the Arrow result
    (no pandas copy of a million-row frame for a summary)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = Table(title="A look at the values", title_justify="left")
    for c in ("feature", "non-null", "mean", "min", "max"):
        t.add_column(c, justify="left" if c == "feature" else "right")
    n = max(table.num_rows, 1)
    for col in [c for c in table.column_names if c not in ("customer_id", "as_of")][:25]:
        s = table[col]
        non_null = share_text(1 - s.null_count / n)
        if (pa.types.is_integer(s.type) or pa.types.is_floating(s.type)) and s.null_count < len(s):
            lo, hi = pc.min_max(s).values()
            t.add_row(col, non_null, f"{pc.mean(s).as_py():.2f}", f"{lo.as_py():.2f}", f"{hi.as_py():.2f}")
        else:
            t.add_row(col, non_null, "", "", "")
    if table.num_columns > 27:
        t.caption = f"... and {table.num_columns - 27} more"
    return t


@app.command("training-set")
def training_set(
    ctx: typer.Context,
    target: Annotated[Target, typer.Argument(help="The label: purchase or churn (configs/labels.yaml).")],
    as_of: Annotated[Optional[str], typer.Option(callback=filled, help="Use only data before this instant, as `train --as-of` does (a date means the end of that day, UTC; default: all of it).")] = None,
    horizon: Annotated[Optional[str], typer.Option(help="Label horizon (e.g. 30d, 8w); default from configs/labels.yaml.")] = None,
    engine: Annotated[Optional[Engine], typer.Option(help="duckdb (default from config) or spark.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="Parquet or CSV file, by its suffix; by default training_set_<target>[_<horizon in days>][_<as_of>].parquet in <workspace>/features (the horizon when it is not the configured one).")] = None,
) -> None:
    """Build the snapshots a model trains on (features, label, test/valid/train) and write them to a file.

    The same stacked snapshots `dynseg train` fits on, for a look at the data or another model."""
    state: State = ctx.obj
    with handled():
        cfg = state.config()
        instant = parse_as_of(as_of) if as_of else None
        from pipeline.jobs.features import export_training_set_job, label_spec

        spec = label_spec(cfg, target.value, horizon)  # a bad --horizon is bad usage, found before any work
        # a horizon other than the configured one is in the name, in days: sets of two horizons do
        # not overwrite each other, and one horizon spelled two ways (8w, 56d) is one file
        other = spec.horizon != label_spec(cfg, target.value).horizon
        suffix = (f"_{spec.horizon.days}d" if other else "") + (f"_{as_of_file_label(instant)}" if instant else "")
        path = out_path or Workspace(cfg.workspace).root / "features" / f"training_set_{target.value}{suffix}.parquet"
        if out_path is None:
            _default_writable(path)
        n = cfg.training.snapshots
        with staged_progress(f"{target.value} training set", n) as step:
            td = export_training_set_job(cfg, target.value, path, instant, horizon, engine_name(engine),
                                         snapshot_steps(step, n))
    for w in td.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    missing = td.profile.missing_groups()
    if missing:
        err.print(f"[yellow]Feature groups unavailable in this data:[/] {', '.join(missing)}")
    frame = td.frame
    features = [c for c in frame.columns if c not in ("customer_id", "as_of", "snapshot", "label")]
    out.print(kv_table(f"Training set for {target.value}", {
        "predicts": td.label.describe(),
        "rows": len(frame),
        "features": len(features),
        "written to": path,
    }))
    t = Table(title="Snapshots (newest first; the test snapshot is out of time)", title_justify="left",
              caption="as of D: the data before D+1 00:00 UTC, the file's as_of",
              caption_justify="left")
    for c in ("snapshot", "as of", "customers", "positives", "label rate"):
        t.add_column(c, justify="left" if c in ("snapshot", "as of") else "right")
    for (as_of_, role), g in frame.groupby(["as_of", "snapshot"], sort=False):
        t.add_row(role, cutoff_label(as_of_.to_pydatetime()), f"{len(g):,}", f"{int(g.label.sum()):,}",
                  f"{g.label.mean():.1%}")
    out.print(t)
    with handled():  # seconds of work on a large set: a stop signal then says so, as during the build
        _print_signal(frame)


#: Rows per snapshot role the printed signal is computed on (see feature_signal's max_rows)
SIGNAL_ROWS = 200_000


def _print_signal(frame) -> None:
    """The ten features that rank the label best on their own, on train and out of time, and a
    warning for any that ranks it almost perfectly (a sign it can see the label window)."""
    from features.customer_features import describe_column
    from features.training_set import SUSPICIOUS_STRENGTH, feature_signal

    signal = feature_signal(frame, max_rows=SIGNAL_ROWS)
    if signal.empty:
        return
    sampled = max((frame.snapshot == role).sum() for role in ("train", "test")) > SIGNAL_ROWS
    t = Table(title="Strongest features on their own (ROC AUC, a null ranks lowest; below 0.5: higher value, "
                    "lower rate)" + (f"; on {SIGNAL_ROWS:,} rows per role" if sampled else ""), title_justify="left")
    for c in ("feature", "group", "known", "AUC train", "AUC test (out of time)"):
        t.add_column(c, justify="left" if c in ("feature", "group") else "right")
    for r in signal.head(10).itertuples():
        group = (describe_column(r.feature) or ("", ""))[0]
        t.add_row(r.feature, group, share_text(r.non_null), f"{r.auc_train:.3f}", f"{r.auc_test:.3f}")
    out.print(t)
    for r in signal[signal.strength >= SUSPICIOUS_STRENGTH].itertuples():
        err.print(f"[yellow]warning:[/] {r.feature} alone ranks the label almost perfectly (train AUC {r.auc_train:.3f}): "
                  "check that it cannot see events at or after its snapshot's cutoff (leakage)", highlight=False)


@app.command()
def describe(
    ctx: typer.Context,
    columns: Annotated[bool, typer.Option("--columns", help="Every column this project's build makes: the patterns "
                                          "expanded by configs/features.yaml, with the roles or source fields each "
                                          "needs and whether models learn from it.")] = False,
) -> None:
    """Print the feature catalog: every column of customer_features, its group and meaning."""
    if columns:
        with handled():
            _describe_project_columns(ctx.obj.config())
        return
    t = Table(title="customer_features — one row per (customer_id, as_of)", title_justify="left", show_lines=False)
    t.add_column("column", style="bold", overflow="fold")
    t.add_column("group")
    t.add_column("meaning", overflow="fold", ratio=1)
    for row in catalog():
        t.add_row(*row)
    out.print(t)
    out.print(f"Definition: features/customer_features.py; documentation: {DOCS.relative_to(DOCS.parents[1])}. "
              "A feature as of T sees only events with ts < T.")


def _describe_project_columns(cfg) -> None:
    from pipeline.jobs.features import project_columns

    cols = project_columns(cfg)
    inputs = sum(c.model_input for c in cols)
    t = Table(title=f"customer_features in this project: {len(cols)} columns, {inputs} of them model inputs, when the "
                    "data holds every role configs/roles.yaml maps and every profile field", title_justify="left")
    t.add_column("column", style="bold", no_wrap=True)
    t.add_column("group")
    t.add_column("needs")
    t.add_column("model input")
    t.add_column("meaning", overflow="fold", ratio=1)
    for c in cols:
        why_not = "key" if c.group == "key" else "no: excluded"
        t.add_row(c.name, c.group, ", ".join(c.needs) or "—", "yes" if c.model_input else why_not, c.meaning)
    out.print(t)
    f = cfg.features
    out.print(f"Windows {', '.join(map(str, sorted(set(f.windows_days))))} days and window roles "
              f"{', '.join(f.window_roles)} ({cfg.origin('features.yaml', 'windows_days')}); "
              f"model inputs leave out {', '.join(cfg.training.exclude_features) or 'nothing'} "
              f"({cfg.origin('training.yaml', 'exclude_features')}). A build leaves out the columns whose "
              "roles or fields its data lacks before the cutoff (`features build` names the groups).", highlight=False)
    if f.categorical_attributes == "auto":
        out.print(f"Profile attributes: auto, so not listed here: every text column of the customers source with at "
                  f"most {f.max_categories} values, but names and contacts; `features build` names the ones it took.",
                  highlight=False)


def _default_writable(path: Path) -> None:
    """The default output, in the workspace, checked as the environment's (exit 1), not as a path
    the user gave (exit 2 would read as bad usage of an option they did not use)."""
    try:
        check_writable(path)
    except ValueError as e:
        said = str(e).split("; choose")[0]  # not "choose a folder": the user chose none
        raise ValueError(f"{said}. It is the default output, in the workspace: make the workspace writable, "
                         "or give --out") from None


def share_text(x: float) -> str:
    """A share as a whole percent, but never 100% or 0% when it is not all or none: 403 of 404
    read 100%, as if every row had a value."""
    if 0.995 <= x < 1:
        return f"{x:.1%}" if x < 0.9995 else ">99.9%"
    if 0 < x < 0.005:
        return f"{x:.1%}" if x >= 0.0005 else "<0.1%"
    return f"{x:.0%}"
