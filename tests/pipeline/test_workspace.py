"""Atomic writes: a file is either what was there before or complete, and what a killed writer
left is removed by the next write."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import dead_pid
from pipeline.workspace import atomic_target, temp_sibling, write_atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temp_file(tmp_path):
    path = write_atomic(tmp_path / "out" / "f.parquet", b"previous")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_target(path) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("writer failed")
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.parquet"]


def test_a_finished_write_replaces_the_file(tmp_path):
    path = write_atomic(tmp_path / "f.csv", b"previous")
    with atomic_target(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text("a,b\n1,2\n")
    assert path.read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]


def test_a_write_removes_the_partial_file_a_killed_writer_left(tmp_path):
    path = write_atomic(tmp_path / "features.parquet", b"previous")
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pipeline.workspace import atomic_target
        with atomic_target(Path({str(path)!r})) as tmp:
            tmp.write_bytes(b"half of the new" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
        """)])
    assert killed.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir() if p.name != "features.parquet"]
    assert len(left) == 1 and left[0].startswith(".features.parquet.") and left[0].endswith(".tmp")
    assert path.read_bytes() == b"previous"

    write_atomic(path, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.parquet"]
    assert path.read_bytes() == b"new"


def test_only_temps_whose_writer_is_gone_are_removed(tmp_path):
    target = tmp_path / "2026-11-28"
    host = socket.gethostname()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        week_ago = time.time() - 8 * 86_400
        temps = {
            "dead writer, a file": (f".2026-11-28.{dead_pid()}@{host}~a1b2.tmp", False, None),
            "dead writer, a folder": (f".2026-11-28.{dead_pid()}@{host}~c3d4.tmp", True, None),
            "running writer": (f".2026-11-28.{running.pid}@{host}~e5f6.tmp", False, None),
            "another host's, fresh": (f".2026-11-28.{dead_pid()}@elsewhere~a7b8.tmp", False, None),
            "another host's, a week old": (f".2026-11-28.1234@elsewhere~c9d0.tmp", False, week_ago),
            "no writer named, a week old": (".2026-11-28.0f3a9c.tmp", True, week_ago),
            "no writer named, fresh": (".2026-11-28.77aa01.tmp", False, None),
            "another output's": (f".2026-11-21.{dead_pid()}@{host}~e1f2.tmp", False, None),
            "another output's, running": (f".customer_features_2026-11-21.parquet.{running.pid}@{host}~e3f4.tmp", False, None),
            "not a temp of ours": (".cache.tmp", False, week_ago),
        }
        for name, folder, mtime in temps.values():
            p = tmp_path / name
            if folder:
                (p / "members").mkdir(parents=True)
                (p / "members" / "part-0.parquet").write_bytes(b"x")
            else:
                p.write_bytes(b"x")
            if mtime:
                os.utime(p, (mtime, mtime))

        fresh = temp_sibling(target)

        kept = {p.name for p in tmp_path.iterdir()}
        gone = {what for what, (name, _, _) in temps.items() if name not in kept}
        # another output's too: nightly outputs are named by date, and no later write comes back
        # to a killed night's name
        assert gone == {"dead writer, a file", "dead writer, a folder", "another host's, a week old",
                        "no writer named, a week old", "another output's"}
        assert fresh.parent == tmp_path and fresh.name.startswith(f".2026-11-28.{os.getpid()}@{host}~")
        assert not fresh.exists()
        assert temp_sibling(target) != fresh  # every call its own name
    finally:
        running.kill()
        running.wait()


def test_a_temp_that_cannot_be_removed_does_not_fail_the_write(tmp_path, monkeypatch):
    # e.g. another user's, on a shared workspace (this suite runs as root, so the refusal is injected)
    path = tmp_path / "features.parquet"
    stale = tmp_path / f".features.parquet.{dead_pid()}@{socket.gethostname()}~a1b2.tmp"
    (stale / "part").mkdir(parents=True)

    def refuse(p, *a, **kw):
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr("pipeline.workspace.shutil.rmtree", refuse)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and stale.is_dir()


def test_a_file_of_another_user_in_a_sticky_folder_is_refused_before_the_work(tmp_path, monkeypatch):
    """/tmp or a shared drop folder: the rename onto another user's file fails, after all the work,
    naming the temp file. (This suite runs as root, who may replace it: another uid is feigned.)"""
    from features.asof import BadValue
    from pipeline.workspace import check_writable

    folder = tmp_path / "drop"
    folder.mkdir()
    folder.chmod(0o1777)
    theirs = folder / "theirs.csv"
    theirs.write_text("old")
    check_writable(theirs, given=True)  # root may
    monkeypatch.setattr(os, "geteuid", lambda: 12345)
    with pytest.raises(BadValue, match=r"cannot replace .*theirs.csv: it belongs to another user"):
        check_writable(theirs, given=True)
    check_writable(folder / "mine.csv", given=True)  # a new name is fine


def test_a_failed_rename_names_the_output_not_the_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "f.csv"

    def refused(src, dst):
        raise PermissionError(1, "Operation not permitted", str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(PermissionError) as e:
        write_atomic(path, b"new")
    assert e.value.filename == str(path) and e.value.errno == 1
    assert list(tmp_path.iterdir()) == []


def test_a_symbolic_link_that_leads_back_to_itself_is_refused(tmp_path):
    """A link loop as the output was replaced by a plain file; a dangling link is written through."""
    from features.asof import BadValue
    from pipeline.workspace import check_writable

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(BadValue, match="a symbolic link that leads back to itself"):
        check_writable(a, given=True)
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "share.csv")
    write_atomic(link, b"x")
    assert link.is_symlink() and (tmp_path / "share.csv").read_bytes() == b"x"


def test_a_full_disk_at_commit_is_one_line_naming_the_file_and_the_database_stands(tmp_path, capsys):
    """The workspace's disk full as a run commits: it ended in a traceback whose last line, "cannot
    rollback - no transaction is active", hid the error that said why. (Its write-ahead log is a
    link to /dev/full here: every write to it finds no space.)"""
    import duckdb
    import typer

    from pipeline.cli.common import handled
    from pipeline.workspace import attached_transaction

    db = tmp_path / "dynseg.duckdb"
    with duckdb.connect(str(db)) as c:
        c.execute("CREATE TABLE t AS SELECT 1 AS x")
    os.symlink("/dev/full", tmp_path / "dynseg.duckdb.wal")
    con = duckdb.connect()
    with pytest.raises(typer.Exit) as stop, handled():
        with attached_transaction(con, db):
            con.execute("INSERT INTO ws.t SELECT range FROM range(1000)")
    said = " ".join(capsys.readouterr().err.split())
    assert stop.value.exit_code == 1 and "Traceback" not in said, said
    assert f"no space left on the device writing {db}.wal" in said and "Nothing of this one was kept" in said
    os.unlink(tmp_path / "dynseg.duckdb.wal")
    with duckdb.connect(str(db)) as c:  # the run's rows are not there; the table before it is
        assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_full_disk_under_an_export_names_the_file_not_its_temp_name(capsys):
    import duckdb
    import typer

    from pipeline.cli.common import _untemp, handled

    assert _untemp("/w/.dynseg/exports/.2026-11-21.16037@vm~96886e38cdf3.tmp/active.parquet") == \
        "/w/.dynseg/exports/2026-11-21/active.parquet"
    with pytest.raises(typer.Exit) as stop, handled():  # a real DuckDB write error: /dev/full has no space
        duckdb.connect().execute("COPY (SELECT range AS x FROM range(100000)) TO '/dev/full' (FORMAT parquet)")
    said = " ".join(capsys.readouterr().err.split())
    assert stop.value.exit_code == 1 and "no space left on the device writing /dev/full." in said, said


def test_a_failure_after_a_run_committed_says_the_run_stands(capsys, monkeypatch):
    """A failure after the commit (a read that found the workspace busy, a full disk at the
    exports) said "Nothing of this one was kept; run it again", and running it again replaced a
    run that stood."""
    import duckdb
    import typer

    from pipeline import workspace
    from pipeline.cli.common import handled

    monkeypatch.setattr(workspace, "COMMITTED", ["scoring run r1 as of 2026-11-27 was recorded"])
    with pytest.raises(typer.Exit), handled():
        duckdb.connect().execute("COPY (SELECT range AS x FROM range(100000)) TO '/dev/full' (FORMAT parquet)")
    said = " ".join(capsys.readouterr().err.split())
    assert "Done before the failure: scoring run r1 as of 2026-11-27 was recorded" in said, said
    assert "run it again" not in said and "Nothing of this one was kept" not in said, said


def test_a_lock_wait_that_is_no_number_of_seconds_is_refused(monkeypatch):
    from pipeline.workspace import lock_wait

    for bad in ("30s", "inf", "nan", "-1"):
        monkeypatch.setenv("DYNSEG_LOCK_WAIT", bad)
        with pytest.raises(ValueError, match=f"DYNSEG_LOCK_WAIT='{bad}': expected a number of seconds"):
            lock_wait()
    monkeypatch.setenv("DYNSEG_LOCK_WAIT", "2.5")
    assert lock_wait() == 2.5

