"""`dynseg data ...` through the real CLI: exit codes, output, and what is (not) written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from conftest import good_events
from pipeline.cli import app

runner = CliRunner()


def test_help_lists_command_groups():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "data" in result.output


def test_a_reader_that_closes_the_pipe_ends_the_command_with_141_not_1(tmp_path):
    """`dynseg features describe | head`: the reader is gone before the table is written. Exit 1
    (rich's own) would read as a data or configuration error to a script with pipefail."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "features", "describe"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the interpreter has imported dynseg and written anything
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == "", stderr


def test_config_error_exits_1_with_file_and_key(project):
    (project.root / "configs" / "project.yaml").write_text("engine: oracle\n")
    result = runner.invoke(app, ["data", "validate"])
    assert result.exit_code == 1
    assert "configs/project.yaml: engine: expected 'duckdb' or 'spark'; found 'oracle'" in result.stderr


def test_bad_data_exits_1_and_writes_nothing(project):
    df = good_events()
    df.loc[2, "amount"] = -5.0
    project.write_events(df)
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert result.exit_code == 1
    assert "negative_purchase" in result.stderr and "nothing was written" in result.stderr
    assert "1 data error found; nothing was written" in " ".join(result.stderr.split())
    assert not project.workspace.exists()
    # A report asked for with --json is written all the same, problems included (for a scheduler).
    asked = project.root / "reports" / "validation.json"
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27", "--json", str(asked)])
    assert result.exit_code == 1
    report = json.loads(asked.read_text())
    assert report["ok"] is False
    assert [(p["check"], p["severity"], p["count"]) for p in report["problems"]] == [("negative_purchase", "error", 1)]
    assert not project.workspace.exists()


def test_good_data_keeps_identity_map_and_report(project):
    project.write_events(good_events())
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27", "--json", str(project.root / "r.json")])
    assert result.exit_code == 0, result.output
    assert "Sources valid" in result.stdout and "Events by role" in result.stdout
    report = json.loads((project.workspace / "reports" / "validation.json").read_text())
    assert report["ok"] and report["summary"]["events"] == 9
    summary = json.loads((project.root / "r.json").read_text())["summary"]
    assert summary["events_by_role"]["purchase"] == 3
    # The roles configs/roles.yaml maps whose names no event has are listed with those names (a
    # misspelt name leaves its role's features at 0 and nothing else says so); the roles seen are not.
    assert summary["roles_without_events"]["email_open"] == ["email_opened"]
    assert not set(summary["roles_without_events"]) & set(summary["events_by_role"])
    listed = " ".join(result.stdout.split())
    assert "0 events: configs/roles.yaml maps " in listed and "'email_opened' to email_open" in listed, listed
    # mapped by an override: that file is named (the base file's name sent a user to the wrong file)
    (project.root / "configs" / "local").mkdir(exist_ok=True)
    (project.root / "configs" / "local" / "roles.yaml").write_text("event_roles:\n  email_click: [email_klicked]\n")
    try:
        said = " ".join(runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"]).stdout.split())
    finally:
        (project.root / "configs" / "local" / "roles.yaml").unlink()
    assert "configs/local/roles.yaml maps 'email_klicked' to email_click" in said, said
    assert "configs/roles.yaml maps " in said and "'email_opened' to email_open" in said
    with duckdb.connect(str(project.workspace / "dynseg.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM identity_map").fetchall() == [(0,)]

    # a source whose path a local override sets: a problem with it names that file, not the base one
    (project.root / "configs" / "local" / "catalog.yaml").write_text(
        "sources:\n  events:\n    path: data/moved.parquet\n")
    try:
        said = " ".join(runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"]).output.split())
    finally:
        (project.root / "configs" / "local" / "catalog.yaml").unlink()
    assert "check `path` in configs/local/catalog.yaml" in said and "entry sources.events in configs/local/catalog.yaml" in said, said
    assert "configs/catalog.yaml" not in said, said


def test_generate_then_validate_end_to_end(project):
    """The demo path, as a user runs it: the installed `dynseg` script in a subprocess."""
    env = os.environ | {"DYNSEG_PROJECT": str(project.root)}
    dynseg = [str(Path(sys.executable).parent / "dynseg")]
    gen = subprocess.run([*dynseg, "data", "generate", "--customers", "3000", "--seed", "3"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    assert (project.workspace / "data" / "events.parquet").exists()
    val = subprocess.run([*dynseg, "data", "validate", "--as-of", "2026-11-27"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert val.returncode == 0, val.stderr
    assert "Identity resolution" in val.stdout
    summary = json.loads((project.workspace / "reports" / "validation.json").read_text())["summary"]
    assert summary["identity"]["merged_customers"] > 0
    assert set(summary["events_by_role"]) >= {"purchase", "refund", "email_send", "email_open", "email_click",
                                              "page_view", "add_to_cart", "unsubscribe", "signup"}
    assert summary["roles_without_events"] == {} and "0 events" not in val.stdout
    # an earlier as_of reads the log as a run as of it does (a backfill): its later events are not
    # from the future (this refused them as such, while `features build --as-of` took the same log)
    early = subprocess.run([*dynseg, "data", "validate", "--as-of", "2026-06-30"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert early.returncode == 0 and "future_ts" not in early.stderr, early.stderr


def test_lift_without_a_run_is_bad_usage(project):
    project.write_events(good_events())
    result = runner.invoke(app, ["lift"])
    assert result.exit_code == 2 and "name the scoring run: --run RUN_ID or --as-of DATE" in result.output
    # both named: one would be ignored (lift reported the --run's run and said nothing of --as-of)
    for command in ("lift", "monitor"):
        result = runner.invoke(app, [command, "--run", "abc123", "--as-of", "2026-11-27"])
        assert result.exit_code == 2 and "give --run or --as-of, not both" in result.output, result.output


def test_the_as_of_reads_back_as_the_date_given_and_the_instant_it_means(project):
    project.write_events(good_events())
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    assert result.exit_code == 0, result.output
    assert "Sources valid as of 2026-01-06 (data before 2026-01-07 00:00 UTC)" in " ".join(result.stdout.split())


def test_validate_as_of_a_date_checks_freshness_as_a_run_as_of_it_would(project):
    """`data validate --as-of` said "valid (0 warnings)" of a log a month old, and `features build`
    as of the same date then exited 75 as stale."""
    project.write_events(good_events())
    built = runner.invoke(app, ["features", "build", "--as-of", "2026-03-01"])
    assert built.exit_code == 75, built.output
    checked = runner.invoke(app, ["data", "validate", "--as-of", "2026-03-01"])
    said = " ".join(checked.output.split())
    # the data meets the contract (validation's verdict), and the run's refusal is said beside it
    assert checked.exit_code == 0 and "a run as of 2026-03-01" in said and "would stop here (exit 75): data is stale" in said
    assert "Sources valid as of 2026-03-01" in said and "(1 warning)" in said, said
    # the report a scheduler reads says it too, with the date asked (it said as of now, and ok)
    report = json.loads((project.workspace / "reports" / "validation.json").read_text())
    assert report["as_of_asked"].startswith("2026-03-02T00:00") and "would stop here (exit 75)" in report["run_warnings"][0]
    early = " ".join(runner.invoke(app, ["data", "validate", "--as-of", "2020-01-01"]).output.split())
    assert "would stop here (exit 1)" in early, early  # no events before it: newer data would not help
    now = " ".join(runner.invoke(app, ["data", "validate"]).output.split())  # a run without --as-of: now
    assert "a run now (without --as-of) would stop here (exit 75): data is stale" in now, now
    cfg = project.root / "configs" / "project.yaml"
    cfg.write_text(cfg.read_text().replace("action: refuse", "action: warn"))
    warned = runner.invoke(app, ["data", "validate", "--as-of", "2026-03-01"])
    said = " ".join(warned.output.split())
    assert warned.exit_code == 0 and "warning:" in said and "would stop" not in said and "stale" in said, said


def test_skipped_identifiers_are_named(project):
    """An identifier shared by too many ids (a test address) is skipped: the summary names it."""
    import pandas as pd

    project.write_events(good_events(25))
    pd.DataFrame({"customer_id": [f"c{i}" for i in range(25)], "id_type": "email", "id_value": "test@shop.com"}
                 ).to_parquet(project.data / "ids.parquet")
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"},
                    identities={"format": "parquet", "path": "data/ids.parquet"})
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Skipped as too common (shared by more than identity.max_ids_per_identifier ids): email 'te…@shop.com' (25 ids)" in text, text
    summary = json.loads((project.workspace / "reports" / "validation.json").read_text())["summary"]
    assert summary["identity"]["skipped_examples"] == ["email 'te…@shop.com' (25 ids)"]  # masked: personal data
    # a run says so too, among its warnings
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.parquet")])
    assert result.exit_code == 0, result.output
    assert ("1 identifier shared by more than identity.max_ids_per_identifier (20) ids was not used to merge customers: "
            "email 'te…@shop.com' (25 ids)") in " ".join(result.stderr.split()), result.stderr


def test_a_workspace_held_by_another_command_says_so_in_one_line(project):
    """Two commands at once on one workspace: the second died with DuckDB's lock traceback."""
    project.write_events(good_events())
    assert runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"]).exit_code == 0
    db = project.workspace / "dynseg.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(120)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = os.environ | {"DYNSEG_PROJECT": str(project.root), "DYNSEG_LOCK_WAIT": "1"}
        second = subprocess.run([sys.executable, "-m", "pipeline.cli", "data", "validate", "--as-of", "2026-11-27"],
                                env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    said = " ".join(second.stderr.split())
    assert second.returncode == 75 and "Traceback" not in second.stderr, second.stderr  # busy: retry, not broken
    assert f"Busy: {db} is held by another process ({holder.pid}), a dynseg command or a notebook" in said, said
    assert "did not let go in 1 s (DYNSEG_LOCK_WAIT)" in said, said
    # held for a moment (another run's write): the command waits for it and goes on (it failed at once)
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(6)", str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        env = os.environ | {"DYNSEG_PROJECT": str(project.root)}  # the default wait, 30 s
        third = subprocess.run([sys.executable, "-m", "pipeline.cli", "data", "validate", "--as-of", "2026-11-27"],
                               env=env, capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert third.returncode == 0, third.stderr
    assert f"Waiting for the workspace database, held by another process ({holder.pid}), up to 30 s" in third.stderr


def test_bad_engine_variables_are_named(project, monkeypatch):
    """DYNSEG_MEMORY_LIMIT=lots and DYNSEG_THREADS=-1 ended in DuckDB tracebacks; =two named no variable."""
    project.write_events(good_events())
    for var, value, expected in (("DYNSEG_MEMORY_LIMIT", "lots", "expected a size such as 2GB"),
                                 ("DYNSEG_THREADS", "-1", "expected a whole number of threads"),
                                 ("DYNSEG_THREADS", "two", "expected a whole number of threads")):
        monkeypatch.setenv(var, value)
        result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
        said = " ".join(result.output.split())
        assert result.exit_code == 1 and f"environment variable {var}: {expected}" in said, said
        monkeypatch.delenv(var)


def test_a_workspace_that_is_a_file_is_named_with_where_it_comes_from(project, monkeypatch, tmp_path):
    project.write_events(good_events())
    (tmp_path / "wsfile").write_text("not a folder")
    monkeypatch.setenv("DYNSEG_WORKSPACE", str(tmp_path / "wsfile"))
    for command in (["data", "validate", "--as-of", "2026-11-27"], ["segments", "list"]):
        result = runner.invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 1 and f"the workspace {tmp_path / 'wsfile'} is a file, not a folder" in said, said
        assert "DYNSEG_WORKSPACE" in said


def test_a_workspace_in_a_folder_that_does_not_exist_is_refused_not_made(project, monkeypatch, tmp_path):
    """A typo in DYNSEG_WORKSPACE's path: `score` made the folders and an empty registry there, and
    said no model was registered. A new workspace in a folder that exists is still made."""
    monkeypatch.setenv("DYNSEG_WORKSPACE", str(tmp_path / "prdo" / "ws"))
    for command in (["score", "--as-of", "2026-11-27"], ["segments", "list"]):
        result = runner.invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 1, said
        assert (f"the workspace {tmp_path / 'prdo' / 'ws'} does not exist, nor the folder {tmp_path / 'prdo'} it would "
                "be made in; it comes from the environment variable DYNSEG_WORKSPACE") in said, said
    assert not (tmp_path / "prdo").exists()
    # set in an override: that file is named (configs/project.yaml, the base, was)
    monkeypatch.delenv("DYNSEG_WORKSPACE")
    (project.root / "configs" / "local").mkdir(exist_ok=True)
    (project.root / "configs" / "local" / "project.yaml").write_text(f"workspace: {tmp_path / 'prdo' / 'ws'}\n")
    try:
        said = " ".join(runner.invoke(app, ["segments", "list"]).output.split())
    finally:
        (project.root / "configs" / "local" / "project.yaml").unlink()
    assert "it comes from workspace: in configs/local/project.yaml" in said, said
    monkeypatch.setenv("DYNSEG_WORKSPACE", str(tmp_path / "ws"))
    result = runner.invoke(app, ["data", "generate", "--customers", "30"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ws" / "data").is_dir()


def test_segments_check_without_segments_says_the_file_is_missing(project):
    """A deleted segments.yaml: `segments check` said "0 segments are valid" and exited 0."""
    (project.root / "configs" / "segments.yaml").unlink()
    result = runner.invoke(app, ["segments", "check"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "configs/segments.yaml is missing, so no segment is defined" in said, said
    (project.root / "configs" / "segments.yaml").write_text("segments: []\n")
    result = runner.invoke(app, ["segments", "check"])
    assert result.exit_code == 1 and "defines no segments" in " ".join(result.output.split())


def test_a_tracking_store_in_a_folder_that_does_not_exist_is_named(project, monkeypatch, tmp_path):
    """A typo in MLFLOW_TRACKING_URI made a new, empty store there, then 'no registered model'."""
    project.write_events(good_events())
    uri = f"sqlite:///{tmp_path}/no/such/dir/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = runner.invoke(app, ["models", "list"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "the environment variable MLFLOW_TRACKING_URI points at a SQLite store in" in said, said
    assert not (tmp_path / "no").exists()


def test_reading_the_registry_before_any_training_creates_no_store(project):
    """`models list`, `models show`, `score` and Project().versions() in a project with nothing
    trained each left a new, empty 1 MB mlflow.db behind."""
    from pipeline.api import Project as ApiProject

    project.write_events(good_events())
    store = project.workspace / "mlflow.db"
    result = runner.invoke(app, ["models", "list"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0 and "No registered models at sqlite:///" in said and "dynseg train churn" in said, said
    for command in (["models", "list", "churn"], ["models", "show", "purchase"], ["score", "--as-of", "2026-11-20"]):
        result = runner.invoke(app, command)
        said = " ".join(result.output.split())
        assert result.exit_code == 1 and "no MLflow store at sqlite:///" in said and "dynseg train purchase" in said, (command, said)
    listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).output)
    assert listed["versions"] == [] and listed["tracking_uri"].startswith("sqlite:///")
    assert json.loads(runner.invoke(app, ["models", "list", "churn", "--json"]).output)["versions"] == []
    versions = ApiProject(project.root).versions()
    assert versions.empty and {"name", "version", "test_as_of"} <= set(versions.columns)
    assert not store.exists() and not list(project.workspace.glob("*mlflow.db*"))


def test_a_log_without_profiles_says_so_and_a_blank_id_reads_blank(project):
    """Without a customers source the summary counted 'customer profiles' as many as customers
    with events, and a blank id's example read `None at row 2`."""
    df = good_events().astype({"customer_id": "object"})
    df.loc[1, "customer_id"] = None
    project.write_events(df, null_ids="drop")
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    said = " ".join(result.output.split())
    assert result.exit_code == 0, said
    assert "customer profiles (merged ids as one) │ none (no customers source)" in said, said
    assert "(blank) at row 2" in said and "None at row" not in said, said


def test_a_workspace_or_file_whose_name_has_glob_characters_is_read_as_named(project, monkeypatch, tmp_path):
    """`ws[1]`: the demo catalog's `{workspace}/data/events.parquet` was read as a glob, `[1]` a
    character class, and 'matches no file'; so was `--events exp[1]/events.csv` for init."""
    monkeypatch.setenv("DYNSEG_WORKSPACE", str(tmp_path / "ws[1]"))
    assert runner.invoke(app, ["data", "generate", "--customers", "40"]).exit_code == 0
    result = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27", "--out", str(tmp_path / "ws[1]" / "f.csv")])
    assert result.exit_code == 0, result.output
    # a file named like the source's glob, inside the same folder, is still refused as --out
    result = runner.invoke(app, ["features", "build", "--as-of", "2026-11-27",
                                 "--out", str(tmp_path / "ws[1]" / "data" / "events.parquet")])
    assert result.exit_code != 0 and "would replace your data" in " ".join(result.output.split()), result.output
    (tmp_path / "exp[1]").mkdir()
    good_events().to_csv(tmp_path / "exp[1]" / "events.csv", index=False)
    result = runner.invoke(app, ["init", str(tmp_path / "shop"), "--events", str(tmp_path / "exp[1]" / "events.csv")])
    assert result.exit_code == 0, result.output


def test_a_missing_id_written_as_text_is_named_by_validate_and_by_a_run(project, monkeypatch):
    """An export wrote missing ids as 'NULL' and 'None': each became one customer, scored and
    segmented, and only the count of ids without a profile hinted at it."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.cli.common import err

    monkeypatch.setattr(err, "width", 400)
    events = good_events(4)
    events.loc[[0, 1], "customer_id"] = "NULL"
    events.loc[4, "customer_id"] = " none "
    project.write_events(events)
    runner = CliRunner()
    checked = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    assert checked.exit_code == 0, checked.output
    text = " ".join(checked.output.split())
    assert "placeholder_id" in text and "look like a missing id written as text" in text, text
    assert "'NULL': 2 events" in text and "' none ': 1 event" in text, text
    built = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert built.exit_code == 0, built.output
    said = " ".join(built.stderr.split())
    assert "customer_id ' none ' and 'NULL' look like a missing id written as text" in said, said
    project.write_events(good_events(4))  # none: nothing said
    built = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.csv")])
    assert "missing id written as text" not in built.stderr
