"""What a user already has survives what goes wrong around a run: sources changed under it, damaged
files, outputs aimed at the project's own files, interrupted writes. (A review, 2026-12-03, found
each of these losing or mixing data with exit 0.)"""

import os
import stat

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import good_events
from pipeline.cli import app
from pipeline.synthetic import generate, write

runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.mark.parametrize("how", ["rewritten", "replaced", "removed"])
def test_a_source_changed_under_a_build_is_refused_and_nothing_is_written(project, monkeypatch, how):
    """Validation passed the log; the feature query then read a refresh that landed midway: exit 0
    and features of data never validated (or, a moment later, DuckDB's traceback)."""
    import pipeline.jobs.features as jobs

    events = project.write_events(good_events())
    out = project.root / "f.parquet"
    assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)]).exit_code == 0
    before = out.read_bytes()
    original = jobs.customer_features

    def refreshed_midway(*args, **kwargs):
        fewer = good_events(2)
        if how == "rewritten":
            fewer.to_parquet(events, index=False)
        elif how == "replaced":
            fewer.to_parquet(events.with_name("new.parquet"), index=False)
            os.replace(events.with_name("new.parquet"), events)
        else:
            events.unlink()
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "customer_features", refreshed_midway)
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)])
    assert r.exit_code == 75 and "Traceback" not in said(r), said(r)
    assert f"{events} (source 'events') was {how} while this run read it" in said(r), said(r)
    assert "nothing was written" in said(r)
    assert out.read_bytes() == before and [p.name for p in out.parent.glob(".f.parquet*")] == []


def test_a_damaged_parquet_file_is_one_line_naming_it(project):
    """A page damaged midway (the footer intact): pyarrow's stream made DuckDB's error an OSError
    without a file name, printed as the output stream's failure, with no fix."""
    rng = np.random.default_rng(3)
    n = 300_000
    frame = pd.DataFrame({"event_id": [f"e{i}-{x}" for i, x in enumerate(rng.integers(0, 2**62, n))],
                          "customer_id": [f"c{x}" for x in rng.integers(0, 50_000, n)],
                          "event_type": "order_completed",
                          "ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 86_400 * 300, n), "s"),
                          "amount": rng.random(n) * 100})
    events = project.write_events(frame)
    data = bytearray(events.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 400] = bytes(b ^ 0x5A for b in data[middle:middle + 400])
    events.write_bytes(bytes(data))
    r = runner.invoke(app, ["data", "validate", "--as-of", "2026-11-27"])
    assert r.exit_code == 1 and "Traceback" not in said(r), said(r)
    assert f"Error: cannot read {events}:" in said(r) and "damaged or cut short" in said(r), said(r)
    assert "output stream" not in said(r)


def test_a_damaged_value_or_an_unnamed_damage_is_one_line_too(project, monkeypatch):
    """A byte flipped in a text value (DuckDB names the file in its own words), and damage DuckDB
    reports without a file ('Corrupted file?'): a traceback, or the output stream blamed."""
    import duckdb

    from features.engines.duckdb import DuckDBEngine

    frame = good_events(400)
    events = project.data / "events.parquet"
    frame.to_parquet(events, compression=None)
    data = bytearray(events.read_bytes())
    at = data.find(b"c250-3")
    data[at + 2] = 0xCE  # no longer UTF-8
    events.write_bytes(bytes(data))
    project.catalog(events={"format": "parquet", "path": "data/events.parquet"})
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.parquet")])
    assert r.exit_code == 1 and "Traceback" not in said(r), said(r)
    assert f"cannot read {events}: value" in said(r) and "is not valid UTF8. The file is damaged" in said(r), said(r)

    project.write_events(good_events())

    def damaged(self, expr):
        raise duckdb.InvalidInputException("Invalid Input Error: Payload value bigger than allowed. Corrupted file?")

    monkeypatch.setattr(DuckDBEngine, "execute_arrow", damaged)
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(project.root / "f.parquet")])
    assert r.exit_code == 1 and f"cannot read {events}: Payload value bigger than allowed" in said(r), said(r)


def test_outputs_aimed_at_the_projects_own_files_are_refused(project):
    """`data validate --json` replaced the event log, the workspace database (identity map, every
    run's history) or a config file with its report, exit 0."""
    events = project.write_events(good_events())
    assert runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"]).exit_code == 0
    db = project.workspace / "dynseg.duckdb"
    catalog = project.root / "configs" / "catalog.yaml"
    kept = {p: p.read_bytes() for p in (events, db, catalog)}
    for target, what in ((events, "is the source 'events'"), (db, "is the workspace's database"),
                         (catalog, "is in the project's configs/ folder"),
                         (project.root / "configs" / "new.json", "is in the project's configs/ folder")):
        r = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06", "--json", str(target)])
        assert r.exit_code == 2 and f"--json {target} {what}" in said(r), said(r)
    r = runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out",
                            str(project.workspace / "dynseg.duckdb")])
    assert r.exit_code == 2 and "is the workspace's database" in said(r), said(r)
    assert {p: p.read_bytes() for p in kept} == kept
    assert not (project.root / "configs" / "new.json").exists()


def test_a_replaced_output_keeps_its_permissions(project):
    """A private (0600) features file became world-readable (0644) when a build replaced it."""
    project.write_events(good_events())
    out = project.root / "f.parquet"
    for mode in (0o600, 0o640):
        out.write_bytes(b"old")
        out.chmod(mode)
        assert runner.invoke(app, ["features", "build", "--as-of", "2026-01-06", "--out", str(out)]).exit_code == 0
        assert stat.S_IMODE(out.stat().st_mode) == mode and pq.read_table(out).num_rows == 3


def test_a_validation_whose_report_cannot_be_written_keeps_nothing(project):
    """The identity map was committed, then the report's write failed: half a run kept."""
    project.write_events(good_events())
    project.workspace.mkdir(parents=True)
    (project.workspace / "reports").write_text("a file where the reports folder goes")
    r = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    assert r.exit_code == 1 and "validation.json" in said(r), said(r)
    assert not (project.workspace / "dynseg.duckdb").exists()


def test_generate_replaces_only_its_own_files_and_writes_them_as_a_set(project, monkeypatch):
    """`data generate --out DIR` replaced the user's exports there without asking; interrupted
    after its first file, it left a new log beside old profiles and said nothing was kept."""
    import pipeline.synthetic as synthetic
    from pipeline.synthetic import is_generated

    folder = project.root / "exports"
    folder.mkdir()
    theirs = folder / "customers.parquet"
    pd.DataFrame({"customer_id": ["a"]}).to_parquet(theirs)
    before = theirs.read_bytes()
    r = runner.invoke(app, ["data", "generate", "--customers", "30", "--out", str(folder)])
    assert r.exit_code == 2 and f"{theirs} is not from `dynseg data generate`" in said(r) and "--force" in said(r)
    assert theirs.read_bytes() == before and not (folder / "events.parquet").exists()
    assert runner.invoke(app, ["data", "generate", "--customers", "30", "--out", str(folder), "--force"]).exit_code == 0
    assert all(is_generated(folder / f"{n}.parquet") for n in ("events", "customers", "identities"))
    first = {p.name: p.read_bytes() for p in folder.iterdir()}

    written = []

    def stopped_at_the_third(frame, path, what):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path)
        frame.to_parquet(path)

    monkeypatch.setattr(synthetic, "to_parquet_marked", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        write(generate(40, seed=3), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # the old set whole, no temp files
    monkeypatch.undo()
    r = runner.invoke(app, ["data", "generate", "--customers", "40", "--seed", "3", "--out", str(folder)])
    assert r.exit_code == 0, said(r)  # its own files: replaced without --force
    assert {p.name for p in folder.iterdir()} == set(first)
    # a generated log edited with pyarrow (which keeps the footer's keys): an event added makes it the user's
    import pyarrow as pa

    edited = pq.read_table(folder / "events.parquet")
    pq.write_table(pa.concat_tables([edited, edited.slice(0, 1)]), folder / "events.parquet")
    r = runner.invoke(app, ["data", "generate", "--customers", "40", "--seed", "3", "--out", str(folder)])
    assert r.exit_code == 2 and f"{folder / 'events.parquet'} is not from `dynseg data generate`" in said(r), said(r)


def test_a_simulated_campaign_is_refused_on_a_log_it_did_not_generate(project):
    """simulate-campaign adds made-up orders to the events file: only to the demo shop's."""
    events = project.write_events(good_events())
    before = events.read_bytes()
    r = runner.invoke(app, ["data", "simulate-campaign", "--as-of", "2026-01-06"])
    assert r.exit_code == 1 and f"{events} (sources.events) is not from `dynseg data generate`" in said(r), said(r)
    assert events.read_bytes() == before


def test_a_simulated_campaign_without_a_run_names_the_date_as_given(project):
    """It named the run's midnight (2026-09-01 00:00:00) beside --as-of 2026-08-31, where lift and
    monitor name the date as given."""
    write(generate(60, seed=6, end="2026-11-27"), project.workspace / "data")
    r = runner.invoke(app, ["data", "simulate-campaign", "--as-of", "2026-08-31"])
    assert r.exit_code == 1 and "no scoring run as of 2026-08-31 in " in said(r), said(r)


def test_ctrl_c_while_the_command_line_loads_is_one_line(tmp_path):
    """Ctrl-C in the first second (the modules loading) printed an 11-32 line traceback."""
    import subprocess
    import sys

    stop_in_an_import = ("import sys\n"
                         "class Stop:\n"
                         "    def find_spec(self, name, path, target=None):\n"
                         "        if name == 'typer':\n"
                         "            raise KeyboardInterrupt\n"
                         "sys.meta_path.insert(0, Stop())\n"
                         "from pipeline.cli import main\n"
                         "main()\n")
    done = subprocess.run([sys.executable, "-c", stop_in_an_import, "features", "describe"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr == "Interrupted.\n", done.stderr


def test_a_default_output_that_cannot_be_written_is_the_environments_problem(project):
    """Without --out, an unwritable workspace exited 2 (bad usage) saying to choose a folder, though
    the user had given no path."""
    project.write_events(good_events())
    project.workspace.mkdir(parents=True)
    (project.workspace / "features").write_text("a file where the features folder goes")
    for command in (["features", "build", "--as-of", "2026-01-06"], ["features", "training-set", "purchase"]):
        r = runner.invoke(app, command)
        assert r.exit_code == 1 and "It is the default output, in the workspace" in said(r), said(r)
        assert "choose a" not in said(r)


@pytest.mark.parametrize("when", ["during validation", "during the summary"])
def test_a_source_changed_under_validation_is_refused_not_a_traceback(project, monkeypatch, when):
    """Removed while validation read it: DuckDB's 'No files found' traceback (exit 1); replaced
    while `data validate` summarised it: exit 0, its summary counting the new file's events."""
    import pipeline.jobs.data as jobs

    events = project.write_events(good_events())
    name = "validate" if when == "during validation" else "data_summary"
    original = getattr(jobs, name)

    def changed_midway(*args, **kwargs):
        if when == "during validation":
            events.unlink()
        else:
            good_events(2).to_parquet(events.with_name("new.parquet"), index=False)
            os.replace(events.with_name("new.parquet"), events)
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, name, changed_midway)
    r = runner.invoke(app, ["data", "validate", "--as-of", "2026-01-06"])
    how = "removed" if when == "during validation" else "replaced"
    assert r.exit_code == 75 and f"{events} (source 'events') was {how} while this run read it" in said(r), said(r)
    assert "Traceback" not in said(r) and not (project.workspace / "dynseg.duckdb").exists()


def test_a_sigterm_once_the_command_is_done_does_not_kill_it(tmp_path):
    """Python gives a handled signal its default action back as it shuts down, and MLflow's and
    DuckDB's exit work can take seconds: a scheduler's SIGTERM then killed a run that had committed
    (143, no word), and the scheduler retried a run that had succeeded."""
    import subprocess
    import sys

    code = ("import signal, sys\n"
            "from pipeline.cli import main\n"
            "sys.argv = ['dynseg', '--help']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as e:\n"
            "    print(e.code, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)\n"
            "    signal.raise_signal(signal.SIGTERM)  # as a late one would land: ignored, the exit code kept\n"
            "    sys.exit(e.code)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("0 True"), (done.returncode, done.stdout[-300:])


def test_a_ctrl_c_typer_ends_in_silence_is_said(monkeypatch, capsys):
    """Between parsing and a command's own handling, typer turns Ctrl-C into exit 130 and prints
    nothing; a command that said its stop is not said twice."""
    import pipeline.cli as cli
    from pipeline.cli.common import said_stopped

    def stopped(**kwargs):
        raise SystemExit(130)

    monkeypatch.setattr(cli, "app", stopped)
    monkeypatch.setattr(cli, "on_sigterm", lambda: None)  # the test process keeps its own handlers
    monkeypatch.setattr(cli, "_done", lambda: None)
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 130 and capsys.readouterr().err == "Interrupted.\n"
    said_stopped.append(2)  # an earlier command's: not this one's
    with pytest.raises(SystemExit):
        cli.main()
    assert capsys.readouterr().err == "Interrupted.\n"

    def stopped_and_said(**kwargs):
        said_stopped.append(2)  # as handled() does when it prints its line
        raise SystemExit(130)

    monkeypatch.setattr(cli, "app", stopped_and_said)
    with pytest.raises(SystemExit):
        cli.main()
    assert capsys.readouterr().err == ""
    said_stopped.clear()


def test_an_output_on_a_read_only_file_system_says_so(tmp_path, monkeypatch):
    """A read-only mount read "no permission to write in ...", a fix (permissions) that does not
    apply. The file system's flag is faked here: mounting one needs privileges a test may lack."""
    import os
    from types import SimpleNamespace

    from features.asof import BadValue
    from pipeline.workspace import check_writable

    folder = tmp_path / "mnt"
    folder.mkdir()
    monkeypatch.setattr(os, "access", lambda p, mode: False)
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises((BadValue, ValueError, OSError), match=r"mnt is on a read-only file system; choose a folder "
                                                               r"on a writable one"):
        check_writable(folder / "f.parquet", given=True)
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=0))
    with pytest.raises((BadValue, ValueError, OSError), match="no permission to write in"):
        check_writable(folder / "f.parquet", given=True)
