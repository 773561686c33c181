"""Root of the CLI: global options and the command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cli import data, explain, features, init, models, monitor, score, segments, train
from pipeline.cli.common import State

app = typer.Typer(
    help="dynseg: dynamic predictive segments. Point-in-time features, churn and purchase propensity "
    "models, governed audiences that update on every scoring run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("init")(init.init)
app.add_typer(data.app, name="data")
app.add_typer(features.app, name="features")
app.add_typer(train.app, name="train")
app.add_typer(models.app, name="models")
app.command("score")(score.score)
app.add_typer(segments.app, name="segments")
app.command("monitor")(monitor.monitor)
app.command("lift")(monitor.lift)
app.command("explain")(explain.explain)


@app.callback()
def root(
    ctx: typer.Context,
    project: Annotated[Optional[Path], typer.Option(help="Project folder holding configs/ (default: here or a parent; env DYNSEG_PROJECT).")] = None,
    profile: Annotated[Optional[str], typer.Option(help="Config profile from configs/profiles/ (default: local; env DYNSEG_PROFILE).")] = None,
) -> None:
    """Exit codes: 0 ok, 1 data or config error, 2 bad usage, 3 a gate or alarm tripped."""
    from pipeline.workspace import COMMITTED

    COMMITTED.clear()  # this command's commits only (tests run many commands in one process)
    ctx.obj = State(project=project, profile=profile)
