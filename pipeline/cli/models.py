"""``dynseg models``: review the registry, promote a version to champion, roll back."""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Iterator, Optional

import typer
from rich.markdown import Markdown
from rich.markup import escape
from rich.table import Table

from features.asof import as_of_label, cutoff_label
from pipeline.cli.common import EXIT_DATA, EXIT_GATE, EXIT_TRY_LATER, State, err, handled, kv_table, on_duckdb_note, out
from pipeline.workspace import Workspace

app = typer.Typer(help="Model registry: versions, cards, promotion to champion, rollback.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Registered model name, or the shorthand churn / purchase.")]


@contextlib.contextmanager
def _registry(ctx: typer.Context, *, no_store_ok: bool = False) -> Iterator:
    """The registry module, connected to the configured store; its errors become exit codes 1 and 3.
    With ``no_store_ok``, a project store not created yet (nothing trained) yields None."""
    with handled():
        cfg = ctx.obj.config()
        # Imported here, not at the top: importing MLflow takes seconds that `dynseg data ...`
        # and `dynseg --help` should not pay.
        from models import registry

        uri = Workspace(cfg.workspace).tracking_uri(cfg.settings.tracking_uri)
        try:
            try:
                registry.connect(uri, create=False)
            except registry.NoStore:
                if not no_store_ok:
                    raise
                yield None
                return
            yield registry
        except registry.PromotionRefused as e:
            err.print(f"[bold red]Refused:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(EXIT_GATE) from None
        except registry.RegistryError as e:
            err.print(f"[bold red]Registry error:[/] {escape(str(e))}", highlight=False)
            # a tracking server that does not answer: try again later (75), as train and score say it
            raise typer.Exit(EXIT_TRY_LATER if getattr(e, "try_later", False) else EXIT_DATA) from None


def _name(ctx: typer.Context, registry, name: str) -> str:
    state: State = ctx.obj
    return registry.model_name(name, state.config().training.registry.names)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4f}"
    return "" if v is None else str(v)


@app.command("list")
def list_(ctx: typer.Context, name: Annotated[Optional[str], typer.Argument(help="Only this model (name or churn / purchase).")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Every version as JSON, whole (a table in a log cuts the long columns).")] = False) -> None:
    """Registered versions with their aliases, validation status and test metrics."""
    with _registry(ctx, no_store_ok=name is None or as_json) as registry:  # (JSON for a script: no versions)
        if registry is None:  # no store yet: nothing trained, and none is created to say so
            cfg = ctx.obj.config()
            frame, uri = None, Workspace(cfg.workspace).tracking_uri(cfg.settings.tracking_uri)
        else:
            frame = registry.list_versions(_name(ctx, registry, name) if name else None)
            uri = registry.tracking_uri()
    if as_json:
        import json

        rows = [] if frame is None else [
            {**r, "version": int(r["version"]), "created": r["created"].isoformat(),
             "test_as_of": cutoff_label(r["test_cutoff"]) if r["test_cutoff"] else "",
             **{k: (None if isinstance(r[k], float) and math.isnan(r[k]) else r[k]) for k in ("test_auc", "test_brier")}}
            for r in frame.to_dict(orient="records")]
        out.print(json.dumps({"tracking_uri": uri, "versions": rows}, indent=2), soft_wrap=True, markup=False,
                  highlight=False, emoji=False)
        return
    if frame is None or frame.empty:
        out.print(f"No registered models at {uri}. Train one with `dynseg train churn` or `dynseg train purchase`.")
        return
    t = Table(title=f"Registered models ({uri})", title_justify="left")
    t.add_column("name", no_wrap=True)
    for c, justify in (("version", "right"), ("aliases", "left"), ("status", "left"), ("target", "left"),
                       ("horizon", "right"), ("test AUC", "right"), ("test Brier", "right"), ("test as of", "left"), ("created (UTC)", "left"),
                       ("history", "left")):
        t.add_column(c, justify=justify, no_wrap=c == "status")  # UNVALIDATED_F… hid what it was
    for r in frame.itertuples(index=False):
        status = {"VALIDATED": "[green]VALIDATED[/]", "UNVALIDATED_FORCED": "[yellow]UNVALIDATED_FORCED[/]"}.get(r.status, r.status)
        t.add_row(r.name, str(r.version), f"[bold]{r.aliases}[/]" if r.aliases else "", status, r.target,
                  r.horizon, _fmt(r.test_auc), _fmt(r.test_brier), cutoff_label(r.test_cutoff), f"{r.created:%Y-%m-%d %H:%M}",
                  f"[yellow]{escape(r.history)}[/]" if "forced" in r.history or "rolled back" in r.history
                  else escape(r.history))
    out.print(t)


@app.command()
def show(
    ctx: typer.Context,
    name: Name,
    version: Annotated[Optional[str], typer.Argument(help="Version number or alias, e.g. champion (default: the champion, else the newest).")] = None,
) -> None:
    """One version: its model card, test metrics against the baselines, bands and tags."""
    with _registry(ctx) as registry:
        d = registry.version_details(_name(ctx, registry, name), version)
    out.print(kv_table(f"{d['name']} version {d['version']}", {
        "aliases": ", ".join(d["aliases"]) or "-",
        "validation status": d["status"] or "-",
        "target": d["target"],
        "label": d["label_definition"] or "-",
        "feature set": d["feature_set"] or "-",
        "test snapshot as of": cutoff_label(d["data_window"].get("test_cutoff", d["tags"].get("test_cutoff"))),
        "snapshots as of (test, valid, train…)": ", ".join(map(cutoff_label, d["data_window"].get("cutoffs", []))) or "-",
        "created (UTC)": f"{d['created']:%Y-%m-%d %H:%M}",
        "run": d["run_id"],
    }))
    out.print(_metrics_table(d["metrics"]))
    if d["bands"]:
        out.print(_bands_table(d["bands"]))
    forced = {k: v for k, v in d["tags"].items() if k in ("promoted_at", "promoted_over", "promotion_compared_on",
                                                          "promotion_reason", "promoted_by_force", "force_reason",
                                                          "force_overrode", "rolled_back_at", "restored_at", "promotion_comparison")}
    if forced:
        out.print(kv_table("Promotion record", forced))
    if d["card"]:
        out.print(Markdown(d["card"]))


def _bands_table(bands: list[dict]) -> Table:
    """The version's band levels, highest first, as resolved at training (a top-% level resolves
    on every scoring run; its note gives where it fell on the test snapshot)."""
    from models.bands import from_dicts

    t = Table(title="Bands (a customer gets the first level their score reaches)", title_justify="left")
    for c in ("band", "rule", "threshold", "note"):
        t.add_column(c)
    for lv in from_dicts(bands):
        if lv.rule == "top_percent":
            threshold = "each run"
        elif lv.threshold is None:
            threshold = ""
        else:
            threshold = "never (empty)" if math.isinf(lv.threshold) else f"{lv.threshold:.4f}"
        t.add_row(lv.name, lv.describe(), threshold, lv.note)
    return t


def _metrics_table(metrics: dict) -> Table:
    """Rows are metrics; columns are the model and each baseline, on the out-of-time test snapshot."""
    scorers = {"model": metrics.get("model", {}), **metrics.get("baselines", {})}
    names = list(dict.fromkeys(k for m in scorers.values() for k, v in m.items() if isinstance(v, (int, float))))
    t = Table(title="Test metrics vs baselines", title_justify="left")
    t.add_column("metric")
    for s in scorers:
        t.add_column(s, justify="right", style="bold" if s == "model" else None)
    for m in names:
        t.add_row(m, *(_fmt(float(sc[m])) if isinstance(sc.get(m), (int, float)) else "" for sc in scorers.values()))
    return t


@app.command()
def compare(ctx: typer.Context, name: Name,
            v1: Annotated[str, typer.Argument(help="Reference version: a number or an alias (e.g. champion).")],
            v2: Annotated[str, typer.Argument(help="Candidate version: a number or an alias.")],
            impact: Annotated[bool, typer.Option(help="Score both on the latest scoring run's features: how the "
                                                      "ranking and bands would change.")] = True) -> None:
    """Two versions' test metrics side by side, whether they were tested on the same snapshot, and
    what the candidate would change in the latest scoring run (ranking, bands)."""
    with _registry(ctx) as registry:
        model = _name(ctx, registry, name)
        v1, v2 = registry.resolve_version(model, v1), registry.resolve_version(model, v2)
        if v1 == v2:
            raise typer.BadParameter(f"compare needs two different versions; both name version {v1}", param_hint="V2")
        c = registry.compare_versions(model, v1, v2)
    _compare_tables(ctx, name, model, v1, v2, c)
    if impact:
        _print_impact(ctx, name, model, v1, v2)


def _print_impact(ctx: typer.Context, name: str, model: str, v1: str, v2: str) -> None:
    """What version ``v2`` would change over ``v1`` in the latest scoring run, or why it cannot say."""
    from pipeline.jobs.promote import impact_on_run

    try:
        cfg = ctx.obj.config()
        on_duckdb_note(cfg, "the impact on the latest run recomputes its features (the same definitions, the same "
                            "values)")
        r = impact_on_run(cfg, model, v1, v2)
    except Exception as e:  # noqa: BLE001 - no run, a pruned one, inputs missing: said, the comparison stands
        out.print(f"[yellow]No impact on a scoring run shown:[/] {escape(str(e).splitlines()[0] if str(e) else type(e).__name__)}",
                  highlight=False)
        return
    changed = int(r.moved.customers.sum()) if len(r.moved) else 0
    out.print(kv_table(f"{name}: version {v2} instead of {v1} on the latest scoring run, as of {as_of_label(r.as_of)} "
                       f"(run {r.run_id}, both at its base rate)", {
                           "customers scored": f"{r.customers:,}",
                           "rank correlation (Spearman)": f"{r.spearman:.3f}",
                           "top 10 % kept": f"{r.top_decile_overlap:.0%} of version {v1}'s top 10 % stay in version {v2}'s",
                           "score moves by more than 5 points": f"{r.bigger_moves:,} ({r.bigger_moves / r.customers:.1%})",
                           "band changes": f"{changed:,} customers ({changed / r.customers:.1%})",
                       }))
    if changed:
        t = Table(title="Band changes (the bands saved with each version)", title_justify="left")
        for col in (f"band in v{v1}", f"band in v{v2}", "customers"):
            t.add_column(col, justify="right" if col == "customers" else "left")
        for m in r.moved.head(12).itertuples():
            t.add_row(str(m.from_band), str(m.to_band), f"{m.customers:,}")
        out.print(t)
    out.print("  Segments defined on these bands or scores gain and lose members accordingly at the next run "
              "after a promotion.", highlight=False)


def _compare_tables(ctx: typer.Context, name: str, model: str, v1: str, v2: str, c: dict) -> None:
    from models import registry

    table = c["metrics"]
    t = Table(title=f"{name}: version {v1} vs version {v2} (test snapshot)", title_justify="left")
    t.add_column("metric")
    for col in table.columns:
        t.add_column(col, justify="right")
    for metric, row in table.iterrows():
        t.add_row(str(metric), *(_fmt(float(v)) for v in row))
    out.print(t)
    settings = c.get("settings")
    if settings is not None and c.get("settings_known"):
        if settings.empty:
            out.print("Trained with the same settings (their MLflow training runs' parameters).", highlight=False)
        else:
            s = Table(title=f"Training settings that differ ({len(settings)}; the MLflow training runs' parameters)",
                      title_justify="left")
            for col in settings.columns:
                s.add_column(col, overflow="fold")
            for row in settings.head(30).itertuples(index=False):
                s.add_row(*(escape(str(v)) for v in row))
            out.print(s)
    if not c["same_label"]:
        out.print(f"[yellow]Different outcomes:[/] version {v1} predicts {c['labels'][0] or '?'}; version {v2} predicts "
                  f"{c['labels'][1] or '?'}. Their metrics measure different things.", highlight=False)
    if c["same_test_snapshot"]:
        ok, why = c["verdict"]
        if c["same_label"]:  # the paired interval of the stored AUC difference: both scored on that snapshot again
            from pipeline.jobs.promote import compare_on_one_snapshot

            a, b = c["versions"]
            stored = tuple(c["metrics"].iloc[:, i].dropna().to_dict() for i in (1, 0))
            err.print("Scoring both versions on their test snapshot again, for the paired interval...")
            extra = registry.paired_on_same_snapshot(
                lambda x, y: compare_on_one_snapshot(ctx.obj.config(), model, x, y), b, a, stored)
            ok, why = registry.default_comparison(against=f"version {v1}")(stored[0] | extra, stored[1])
        out.print(f"{c['snapshot'].capitalize()}: the figures are comparable.")
        out.print(f"Promotion gate for version {v2} over {v1}: {'[green]would pass[/]' if ok else '[red]would refuse[/]'} ({why})",
                  highlight=False)
    elif not c["same_label"]:
        out.print(f"[yellow]Not comparable:[/] {c['snapshot']}, and the outcomes differ: `dynseg models promote` "
                  "refuses a version that predicts another outcome than the champion (--force overrides).",
                  highlight=False)
    else:
        # What promote would decide, before anything is promoted: both scored on the newer snapshot
        # (the stored figures above come from two snapshots; a reviewer read them as a verdict)
        out.print(f"[yellow]Not comparable as stored:[/] {c['snapshot']}.", highlight=False)
        from pipeline.jobs.promote import compare_on_one_snapshot

        a, b = c["versions"]
        err.print("Scoring both versions on the newer test snapshot, as `dynseg models promote` does...")
        try:
            with handled():
                mb, ma, where = compare_on_one_snapshot(ctx.obj.config(), model, b, a)
        except typer.Exit:
            out.print("[yellow]They could not be scored on one snapshot[/] (above); `dynseg models promote` would "
                      "refuse for the same reason.", highlight=False)
            return
        t = Table(title=f"{name}: version {v1} vs version {v2} on {where}", title_justify="left")
        for col in ("metric", f"v{v1}", f"v{v2}", "difference"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for metric in ("roc_auc", "pr_auc", "brier", "log_loss", "lift_top_decile"):
            if metric in ma and metric in mb:
                t.add_row(metric, _fmt(float(ma[metric])), _fmt(float(mb[metric])), _fmt(float(mb[metric]) - float(ma[metric])))
        out.print(t)
        ok, why = registry.default_comparison(against=f"version {v1}")(mb, ma)
        out.print(f"Promotion gate for version {v2} over {v1} on that snapshot: "
                  f"{'[green]would pass[/]' if ok else '[red]would refuse[/]'} ({why})", highlight=False)


@app.command()
def promote(
    ctx: typer.Context,
    name: Name,
    version: Annotated[str, typer.Argument(help="Version to make champion: a number, an alias, or 'latest'.")],
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses; recorded on the version.")] = False,
    reason: Annotated[str, typer.Option(help="Why (required with --force; recorded on the version).")] = "",
) -> None:
    """Set alias "champion" on a version, if it is at least as good as the current champion on one test snapshot
    (both are scored on the newer one when they were tested on different snapshots)."""
    if force and not reason.strip():
        raise typer.BadParameter("--force needs --reason TEXT: the reason is recorded on the version", param_hint="--reason")
    with _registry(ctx) as registry:
        model = _name(ctx, registry, name)
        if version == "latest":
            versions = registry.list_versions(model)
            if versions.empty:
                raise registry.RegistryError(f"model {model!r} has no versions yet; train one with `dynseg train`")
            version = str(versions.version.astype(int).max())
        elif not version.isdigit():  # an alias (previous-champion): its number, or the registry says what there is
            try:
                version = registry.resolve_version(model, version)
            except registry.RegistryError as e:
                raise registry.RegistryError(f"{e}, or 'latest' for the newest version") from None
        cfg = ctx.obj.config()

        def common_snapshot(candidate, champion):
            from pipeline.jobs.promote import compare_on_one_snapshot

            a, b = (cutoff_label(v.tags.get("test_cutoff")) for v in (candidate, champion))
            if a == b:  # the gate compares the stored figures; scored again for the paired interval only
                err.print(f"Versions {candidate.version} and {champion.version} were tested on the same snapshot "
                          f"(as of {a}): scoring both on it again for a paired interval of their AUC difference...")
            else:
                err.print(f"Versions {candidate.version} and {champion.version} were tested on different snapshots "
                          f"(as of {a} and {b}): scoring both on the newer one...")
            return compare_on_one_snapshot(cfg, model, candidate, champion)

        names = cfg.training.registry.names
        target = next((t for t, n in names.items() if n == model), None)  # a registered name outside the config: unchecked
        result = registry.promote(model, version, force=force, reason=reason, common_snapshot=common_snapshot,
                                  target=target)
    if result.forced:
        err.print(f"[yellow]Forced:[/] reason recorded on the version: {escape(reason)}", highlight=False)
    out.print(result.message, highlight=False)
    if result.previous:
        out.print(f"Version {result.previous} is now 'previous-champion'; undo with: dynseg models rollback {name}")


@app.command()
def rollback(ctx: typer.Context, name: Name) -> None:
    """Make the previous champion the champion again: undoes the last promotion, once (the alias
    previous-champion goes with it)."""
    with _registry(ctx) as registry:
        result = registry.rollback(_name(ctx, registry, name))
    out.print(result.message, highlight=False)
