"""The workspace: the one folder dynseg writes to.

Layout: ``dynseg.duckdb`` (the embedded database: identity map, later features, runs and
segments), ``mlflow.db`` + ``mlruns/`` (default MLflow store), ``data/`` (generated demo data),
``reports/``. Every write is atomic: tables in one DuckDB transaction, files via a temp name and
a rename, so a failed run leaves what was there before.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import duckdb

from features.normalize import literal
from features.writers import HOST, running, writer_tag

if TYPE_CHECKING:
    from pipeline.config import Config

T = TypeVar("T")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "dynseg.duckdb"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def tracking_uri(self, configured: str | None = None) -> str:
        """MLFLOW_TRACKING_URI, else the configured URI, else a SQLite store in the workspace. A
        given SQLite store in a folder that does not exist is refused: MLflow made it there, a new
        empty store, and then said no model was registered (a typo in the path, not a lost registry)."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        uri = env or configured
        if uri and uri.startswith("sqlite:///"):
            folder = Path(uri.removeprefix("sqlite:///").split("?")[0]).parent
            if not folder.is_dir():
                given = "the environment variable MLFLOW_TRACKING_URI" if env else "tracking_uri in configs/project.yaml"
                raise ValueError(f"{given} points at a SQLite store in {folder}, a folder that does not exist; "
                                 f"found {uri!r}. Fix the path (or unset it to use the workspace's store)")
        return uri or f"sqlite:///{self.root / 'mlflow.db'}"

    def write_tables(self, con: duckdb.DuckDBPyConnection, tables: dict[str, str]) -> None:
        """Replace workspace tables with the results of queries on ``con``, all in one transaction."""
        self.root.mkdir(parents=True, exist_ok=True)
        with attached_transaction(con, self.db_path):
            for name, query in tables.items():
                con.execute(f'CREATE OR REPLACE TABLE ws."{name}" AS {query}')

    def write_json(self, relpath: str, obj: Any) -> Path:
        return write_atomic(self.root / relpath, json.dumps(obj, indent=2, default=str).encode())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def check_writable(path: Path, example: str | None = None, *, given: bool = False) -> None:
    """Refuse, before any work, an output path that cannot become a file: a folder (bad usage,
    with ``example`` as a file name to put in it), under a file, or in a folder this process
    cannot write. ``given``: the path came from the command line, so each of these is bad usage
    (exit 2); a workspace path that cannot be written is an environment error (exit 1)."""
    from features.asof import BadValue

    refuse = BadValue if given else ValueError
    path = Path(path)
    if path.is_symlink() and Path(os.path.realpath(path)) == path.absolute():  # a link that leads back to itself
        raise refuse(f"cannot write {path}: it is a symbolic link that leads back to itself; remove the link "
                     "or point it at a file")
    if path.is_dir():
        raise BadValue(f"{path} is a folder; expected a file path (e.g. {path / (example or 'out' + (path.suffix or '.parquet'))})")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(f"cannot write {path}: {parent} is a file, not a folder; choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        if _read_only_fs(parent):  # (os.access says so too: not a permission to ask for)
            raise refuse(f"cannot write {path}: {parent} is on a read-only file system; choose a folder on a "
                         "writable one (or remount it read-write)")
        raise refuse(f"cannot write {path}: no permission to write in {parent}; choose a folder you can write")
    if _owned_elsewhere_in_sticky(Path(os.path.realpath(path))):
        raise refuse(f"cannot replace {path}: it belongs to another user, and its folder lets only a file's owner "
                     "replace it (a sticky folder, such as /tmp); choose another name or folder, or remove the file")
    try:  # what os.access cannot tell: a read-only file system, or root's writes refused (/sys, /proc)
        with tempfile.TemporaryFile(dir=parent):  # unnamed where the system can (O_TMPFILE): nothing left behind
            pass
    except OSError as e:
        raise refuse(f"cannot write {path}: a file cannot be created in {parent} ({e.strerror}); choose a folder "
                     "you can write") from None


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # (no statvfs: Windows)
        return False


def not_the_projects_own(cfg: Config, out: Path, option: str = "--out") -> None:
    """Refuse an output path (given as ``option``) that is one of the configured sources, a file of
    configs/, or the workspace's database or tracking store: a typo in a scheduled command would
    replace the customer profiles (or the log) with features, and every later run would read those
    as its data without an error; the database holds the identity map and every run's history."""
    from pathlib import PurePath

    from features.asof import BadValue
    from features.sources import glob_files, literal_folders

    target = Path(os.path.realpath(out))
    ws = Workspace(cfg.workspace)
    try:
        store = ws.tracking_uri(cfg.settings.tracking_uri)
    except ValueError:  # a store in a folder that does not exist: nothing there to lose
        store = ""
    own = {ws.db_path: "the workspace's database (identity map, scoring runs, segment history)",
           Path(f"{ws.db_path}.wal"): "the workspace database's write-ahead log"}
    if store.startswith("sqlite:///"):
        own[Path(store.removeprefix("sqlite:///").split("?")[0])] = "the MLflow tracking store (models, registry)"
    for path, what in own.items():
        if target == Path(os.path.realpath(path)):
            raise BadValue(f"{option} {out} is {what}: writing there would lose it; choose another path")
    configs = Path(os.path.realpath(cfg.project_dir / "configs"))
    if target.is_relative_to(configs) and not target.is_dir():  # (a folder is refused as one)
        raise BadValue(f"{option} {out} is in the project's configs/ folder: writing there would replace its "
                       "configuration; choose another path")
    for name, spec in cfg.source_specs().items():
        pattern = Path(spec.path) if Path(spec.path).is_absolute() else cfg.project_dir / spec.path
        files = {Path(os.path.realpath(f)) for f in ([pattern] if pattern.is_file() else glob_files(pattern))}
        # a new file the glob would take in too; segment by segment, as DuckDB's glob reads (a
        # file in a subfolder of data/events-*.parquet's folder is not one)
        if target in files or PurePath(target).match(literal_folders(Path(os.path.realpath(pattern)))):
            raise BadValue(f"{option} {out} is the source {name!r} of configs/catalog.yaml ({spec.path}): writing there "
                           "would replace your data; choose another path")


def _owned_elsewhere_in_sticky(path: Path) -> bool:
    """Whether renaming onto ``path`` is refused by its folder's sticky bit: the file exists and
    neither it nor its folder is ours (root may replace it)."""
    try:
        st, folder = path.lstat(), path.parent.stat()
    except OSError:
        return False
    uid = os.geteuid()
    return bool(folder.st_mode & stat.S_ISVTX) and uid != 0 and uid not in (st.st_uid, folder.st_uid)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write bytes to ``path`` via a temp file in the same folder and a rename."""
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return path


#: What this process has committed, a line each ("scoring run X (as of D) was recorded"): a stop
#: that lands after a commit says it (it said "nothing ... was kept" of a run that stood)
COMMITTED: list[str] = []


@contextmanager
def attached_transaction(con: duckdb.DuckDBPyConnection, db_path: Path, state: dict | None = None,
                         done: str | None = None) -> Iterator[None]:
    """The database file ``db_path`` attached to ``con`` as ``ws`` for one transaction: committed
    when the block ends, rolled back (nothing written) when it raises, detached either way.
    ``state["committed"]`` is set once the commit has happened: a signal that lands after it (as
    COMMIT returns, or in the DETACH) raises from a transaction that stands, which is then not
    rolled back, and the caller must not undo what goes with it. ``done``, what the transaction
    did in words, goes to :data:`COMMITTED` once it stands."""
    state = {} if state is None else state
    sweep_stale_temps(db_path)  # a copy a killed prune left beside the database (it stayed for good)
    waiting_for_lock(lambda: con.execute(f"ATTACH {literal(str(db_path))} AS ws"))  # (a path may hold a quote: o'k)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield
            con.execute("COMMIT")
            state["committed"] = True
            if done:
                COMMITTED.append(done)
        except BaseException:
            if not state.get("committed"):
                # a COMMIT that failed (a full disk) has ended the transaction itself: a ROLLBACK then
                # raised "no transaction is active" over the error that said why
                try:
                    con.execute("ROLLBACK")
                except duckdb.Error as e:
                    if "no transaction is active" not in str(e):
                        raise
            raise
    except BaseException:
        with suppress(duckdb.Error):  # the error that ended the block is the one to tell
            con.execute("DETACH ws")
        raise
    else:
        con.execute("DETACH ws")


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write; renamed onto ``path`` when the block
    succeeds, removed when it fails, so ``path`` is either what was there before or complete.
    For writers that stream to a file (a large Parquet file need not be held in memory first).

    A symbolic link is written through (``latest.parquet -> /share/...`` keeps pointing at its
    target, now new), not replaced by a file. A write that fails (a full disk, a refused rename)
    raises an ``OSError`` naming ``path``, not the temp file the user never asked for."""
    check_writable(path)
    given, path = Path(path), Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:  # a file replaced keeps its permissions (one made private stays private)
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:  # a new file: mkstemp makes it private (0600); it gets what a plain open() would give
        mode = 0o666 & ~_UMASK
    os.fchmod(fd, mode)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename not in (None, name, str(tmp)):
            raise
        # pyarrow's and pandas' write errors name no file (or the temp one): say which output failed
        raise OSError(e.errno or _errno_in(str(e)), e.strerror or str(e), str(given)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _errno_in(text: str) -> int | None:
    """The errno a library wrote into its message (pyarrow: ``[errno 28] No space left on device``)."""
    m = re.search(r"\[errno (\d+)\]", text, re.IGNORECASE)
    return int(m.group(1)) if m else None


#: A temp name whose writer cannot be checked (another host's, or from before temp names carried
#: their writer) is taken as abandoned once it is this old: no write of ours runs for a week.
ABANDONED_AFTER_S = 7 * 86_400



def _temp_prefix(path: Path) -> str:
    """``.NAME.PID@HOST~``: the start of a temp name beside ``path``, naming the process writing
    it, so that a later write can tell a partial file left by a killed writer from one still being
    written (:func:`sweep_stale_temps`)."""
    return f".{path.name}.{writer_tag()}~"


def temp_sibling(path: Path) -> Path:
    """A new hidden temp path beside ``path`` (a file or folder to be renamed onto ``path`` once
    complete), after removing what killed writers of ``path`` left behind."""
    path = Path(path)
    sweep_stale_temps(path)
    return path.with_name(f"{_temp_prefix(path)}{os.urandom(6).hex()}.tmp")


def swap_in_folder(tmp_dir: Path, folder: Path) -> None:
    """Replace ``folder`` by the complete ``tmp_dir`` (a rename; the old folder, first renamed aside
    to ``.NAME.old``, is removed after): a reader sees the old folder or the new one, never a half."""
    old = folder.parent / f".{folder.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp_dir.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


#: A temp name of ours: ``.NAME.PID@HOST~XXXX.tmp`` (NAME, and the writer's part)
TEMP_NAME = re.compile(r"\.(.+)\.(\d+@[^~/]+~[^~]*\.tmp)$")


def held_elsewhere(e: BaseException) -> bool:
    """Whether DuckDB's ``e`` is the workspace database held by another process: "Conflicting lock",
    not "Could not set lock" alone, which a file system without locks says too."""
    return isinstance(e, duckdb.IOException) and "Conflicting lock" in str(e)


def lock_holder(text: str) -> str | None:
    """The PID DuckDB names as holding the lock, if it does."""
    found = re.search(r"\(PID (\d+)\)", text)
    return found.group(1) if found else None


def lock_wait() -> float:
    """Seconds to wait for the workspace database while another process holds it: ``DYNSEG_LOCK_WAIT``,
    30 by default (a run's write holds it a second or two); 0 does not wait."""
    import math

    text = os.environ.get("DYNSEG_LOCK_WAIT", "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"DYNSEG_LOCK_WAIT={text!r}: expected a number of seconds, 0 or more (30; 0 does not wait)")
    return seconds


def waiting_for_lock(open_: Callable[[], T]) -> T:
    """``open_()`` (a connection to, or an ATTACH of, the workspace database), tried again every
    0.2 s while another process holds the file, for up to :func:`lock_wait` seconds; then DuckDB's
    error, which the CLI says as "busy" (exit 75). Two runs that finished together, or a command
    run while a nightly run wrote, failed at once, the whole run lost, for a lock held 1–2 s."""
    wait = lock_wait()
    deadline, said = time.monotonic() + wait, False
    while True:
        try:
            return open_()
        except duckdb.IOException as e:
            if not held_elsewhere(e) or time.monotonic() >= deadline:
                raise
            if not said:  # a log that stalls says why
                import sys

                holder = lock_holder(str(e))
                print(f"Waiting for the workspace database, held by another process"
                      + (f" ({holder})" if holder else "") + f", up to {wait:g} s (DYNSEG_LOCK_WAIT)",
                      file=sys.stderr, flush=True)
                said = True
            time.sleep(0.2)


def sweep_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files and folders of earlier writes of ``path`` whose writer is gone.

    A write that fails removes its temp file itself; one killed outright (SIGKILL, the
    out-of-memory killer, a power cut) cannot, and leaves a hidden ``.NAME.PID@HOST~XXXX.tmp``
    beside ``path``, as large as it got. Such a file is removed when its process no longer runs on
    this host, or when it is a week old (another host's, a name without its writer); a concurrent
    write keeps its file. Every output's leftovers in ``path``'s folder go, not only ``path``'s:
    nightly outputs are named by date, so no later write comes back to a killed night's name.
    Returns what was removed."""
    path = Path(path)
    removed = []
    for found in glob.glob(glob.escape(str(path.parent)) + "/.*.tmp"):
        stale = Path(found)
        writer = TEMP_NAME.match(stale.name)
        if writer is None and not stale.name.startswith(f".{path.name}."):
            continue  # not a temp name of ours
        if not _abandoned(stale, writer.group(2) if writer else stale.name[len(path.name) + 2:]):
            continue
        try:
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale)
            else:
                stale.unlink()
                # a DuckDB copy's write-ahead log (a prune killed while compacting), SQLite's journal
                for log in (".wal", "-journal"):
                    stale.with_name(stale.name + log).unlink(missing_ok=True)
        except OSError:  # removed meanwhile by another sweep, or not ours to remove: never fail a write for it
            continue
        removed.append(stale)
    return removed


def _abandoned(stale: Path, rest: str) -> bool:
    """Whether the temp ``stale`` (named ``.NAME.`` + ``rest``) was left by a writer that is gone."""
    writer = re.match(r"(\d+)@(.+)~[^~]*\.tmp$", rest)
    if writer and writer.group(2) == HOST and not running(int(writer.group(1))):
        return True
    try:  # (a process running under a dead writer's reused pid holds nothing for a week either)
        return time.time() - stale.lstat().st_mtime > ABANDONED_AFTER_S
    except FileNotFoundError:
        return False


