"""What every command group shares: config loading, consoles, error handling, progress."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.asof import BadValue
from pipeline.config import Config, ConfigError, load_config

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_GATE = 0, 1, 2, 3
#: the workspace is held by another command: try again later (sysexits' EX_TEMPFAIL), not a broken input
EXIT_BUSY = 75
#: try again later (sysexits' EX_TEMPFAIL, as for a busy workspace): data not yet fresh, the MLflow
#: server not answering, an outcome window still open; a scheduler retries, nobody has to fix anything
EXIT_TRY_LATER = EXIT_BUSY
#: The reader closed the pipe (``dynseg ... | head``): the status of a program SIGPIPE stopped
EXIT_PIPE = 128 + 13


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Stop quietly with :data:`EXIT_PIPE` when the reader has gone; rich's own exit 1 is
        dynseg's code for a data or configuration error, which a script would take it for."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush goes nowhere
        raise SystemExit(EXIT_PIPE)


def _console(stderr: bool = False) -> Console:
    # Piped output (schedulers, logs, tests) gets a wide fixed width instead of rich's 80
    # columns, so tables stay readable; a terminal or COLUMNS decides otherwise.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else 140
    # messages to a log (not a terminal) stay one line each, for grep; tables keep the width
    return _Console(stderr=stderr, width=width, soft_wrap=stderr and not stream.isatty())


out = _console()
err = _console(stderr=True)


#: the stops a command said in its one line (typer ends a Ctrl-C outside a command's own handling
#: with exit 130 and nothing said; the entry point says it then)
said_stopped: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler stopping a job, ``kill``) or SIGHUP (a closed terminal), raised in the main thread like Ctrl-C so that
    the same cleanup runs: temp files removed, the DuckDB transaction rolled back, Spark's scratch
    folder deleted. Python's default for SIGTERM ends the process without any of that."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


#: SIGTERMs received: DuckDB turns the exception a signal raises during a query into its own
#: ``RuntimeError('Query interrupted')``, which does not say which signal it was.
_signals: list[int] = []


def _interrupted_query(e: BaseException) -> bool:
    return isinstance(e, RuntimeError) and str(e) == "Query interrupted" and "duckdb" in sys.modules


def on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (only the first one: a second
    signal during the cleanup is ignored rather than cutting the cleanup short)."""
    import signal

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        _signals.append(signum)
        _quiet_root_logger()
        raise Terminated(signum)

    def interrupted(signum, frame):
        # kept, as SIGTERM's: a terminal's Ctrl-C reaches Spark's JVM too, and the call in flight
        # (or a pyspark `finally` after it) then fails as a broken connection, not as the interrupt
        _signals.append(signum)
        _quiet_root_logger()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGTERM, terminated)
    # a closed terminal or ssh session, and some supervisors: the same cleanup (not where nohup ignores it)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        signal.signal(signal.SIGHUP, terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where Ctrl-C is ignored
        signal.signal(signal.SIGINT, interrupted)


def _quiet_root_logger() -> None:
    """Once a run is stopping: Spark's JVM gateway (py4j) reports the interrupted call with
    ``logging.exception`` on the root logger, which, with no handler there, sets up logging to
    print it with its traceback before our one line. A handler that drops it stops that."""
    import logging

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())


class Engine(str, Enum):
    """``--engine``: a typo is a usage error (exit 2) naming the choices, before any work starts."""

    duckdb = "duckdb"
    spark = "spark"


def filled(value: str | None) -> str | None:
    """An ``--as-of`` callback: an empty value is refused. A scheduler's ``--as-of "$(date ...)"``
    whose substitution came out empty ran as of now (or on all the data) instead of the date meant."""
    if value is not None and not value.strip():
        raise typer.BadParameter("is empty: give a date (2026-11-27, the end of that day, UTC) or an instant "
                                 "(2026-11-27T06:00Z), or leave the option out for its default")
    return value


def engine_name(engine: Engine | None) -> str | None:
    return engine.value if engine is not None else None


@dataclass
class State:
    project: Path | None
    profile: str | None
    _config: Config | None = None

    def config(self) -> Config:
        if self._config is None:
            from features.writers import signals_held

            # Ctrl-C held while pydantic validates (in Rust, where it was lost or read as a bad
            # value: "currency: found ''"), and acted on after
            with signals_held():
                self._config = load_config(self.project, self.profile)
            global _SPARK_SETTINGS  # the files that set spark:, for a Spark failure to name
            files = list(dict.fromkeys(self._config.origin("project.yaml", "spark", k) for k in ("master", "conf")))
            _SPARK_SETTINGS = " and ".join(files)
        return self._config


def on_duckdb_note(cfg: Config, what: str) -> None:
    """Under a profile whose engine is Spark, say that a command does ``what`` on DuckDB."""
    if cfg.settings.engine == "spark":
        err.print(f"{what} on DuckDB in this process, not on Spark (the profile's engine).", highlight=False)


def _registry_error(e: RuntimeError) -> NoReturn:
    """Registry errors as one line (exit 3 for a refused promotion); any other RuntimeError is
    raised again. Checked through sys.modules so that commands which never touch MLflow do not
    pay for importing it."""
    reg = sys.modules.get("models.registry")
    if reg is None or not isinstance(e, reg.RegistryError):
        raise e
    refused = isinstance(e, reg.PromotionRefused)
    err.print(f"[bold red]{'Refused' if refused else 'Registry error'}:[/] {escape(str(e))}", highlight=False)
    raise typer.Exit(EXIT_GATE if refused else EXIT_TRY_LATER if getattr(e, "try_later", False) else EXIT_DATA) from None


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn known failures into a clear message on stderr and exit code 1."""
    from pipeline.jobs.data import DataError, forget_reads

    forget_reads()  # a read error names a change to this command's sources only
    try:
        try:
            yield
        except Exception as e:
            if _signals:  # a stop signal reached the process group too: Spark's JVM died of it, and its call failed
                raise Terminated(_signals[-1]) from None
            if type(e).__module__.split(".")[0] in ("pyspark", "py4j"):  # (some are RuntimeErrors)
                _spark_failed(e)
                raise typer.Exit(EXIT_DATA) from None
            _changed_source(e)
            _damaged_file(e)
            raise
    except ConfigError as e:
        err.print(f"[bold red]Configuration error{'s' if len(e.issues) > 1 else ''}:[/]")
        for issue in e.issues:
            err.print(f"  - {issue}", markup=False, highlight=False)
        raise typer.Exit(EXIT_DATA) from None
    except DataError as e:
        from pipeline.cli.render import problems_table

        err.print(problems_table(e.report.problems))
        err.print(f"[bold red]{e.summary}.[/] Fix the sources (or configs/) and run again.")
        raise typer.Exit(EXIT_DATA) from None
    except BadValue as e:  # an option's value that cannot be read: bad usage, as click's own errors
        err.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except ValueError as e:
        err.print(f"[bold red]Error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(EXIT_TRY_LATER if getattr(e, "try_later", False) else EXIT_DATA) from None
    except (KeyboardInterrupt, RuntimeError) as e:
        if isinstance(e, RuntimeError) and not _interrupted_query(e):
            _registry_error(e)
        # Ctrl-C or SIGTERM: one line, not the traceback (or, on Spark, the JVM gateway's). Every
        # write is atomic (a temp file and a rename, one transaction per run), so nothing is left
        # half-written. Exit 128 + the signal's number, as a shell reports it (130, 143).
        signum = e.signum if isinstance(e, Terminated) else (_signals[-1] if _signals else 2)
        what = {15: "Terminated (SIGTERM).", 1: "Hung up (SIGHUP)."}.get(signum, "Interrupted.")
        said_stopped.append(signum)
        from pipeline.workspace import COMMITTED

        if COMMITTED:  # stopped after a commit: what stands is said (a scheduler read exit 143 as "nothing done")
            err.print(f"[bold red]{what}[/] Done before the stop: {'; '.join(COMMITTED)}. Any export folder that "
                      "goes with it is put in place, or a dropped run's removed, by the next `dynseg score` or "
                      "`segments drop-run`. Nothing else was kept: writes are atomic.", highlight=False)
        else:
            err.print(f"[bold red]{what}[/] Nothing this command had not finished writing was kept: "
                      "its writes are atomic.", highlight=False)
        raise typer.Exit(128 + signum) from None
    except OSError as e:
        # A path that cannot be written or read (a folder where a file was asked for, a missing
        # parent, no permission, a full disk): the message names it; nothing was half-written
        # (atomic writes). Without a path (the terminal's or the log's stream is full), one line too.
        import errno

        what = e.strerror or str(e)
        what = re.sub(r"^error\s+", "", what, flags=re.IGNORECASE)  # pyarrow's "Error writing…" after our "Error:"
        what = what[:1].upper() + what[1:]
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "Free some space there, or write to another folder; the previous file, if any, is as it was."
        elif e.filename is None:
            fix = "Nothing this command had not finished writing was kept."
        else:
            fix = "Check the path (its folder must exist and be writable, and it must not be a folder itself)."
        where = f": {e.filename}" if e.filename is not None else " (the command's output stream)"
        try:  # escaped: pyarrow's "[errno 28]" is no markup
            err.print(f"[bold red]Error:[/] {escape(what + where)}. {fix}", highlight=False)
        except OSError:
            pass  # stderr itself cannot be written: the exit code says it
        raise typer.Exit(EXIT_DATA) from None
    except Exception as e:
        duckdb = sys.modules.get("duckdb")
        code = _workspace_io(e) if duckdb is not None and isinstance(e, duckdb.IOException) else None
        if code is None and duckdb is not None and isinstance(e, duckdb.Error):
            code = _disk_full(e)  # DuckDB's own writes (the database at commit, a COPY): its errors are no OSError
        if code is not None:
            raise typer.Exit(code) from None
        if duckdb is None or not isinstance(e, duckdb.OutOfMemoryException):
            raise
        err.print(f"[bold red]Out of memory:[/] DuckDB could not stay under its memory limit "
                  f"({str(e).splitlines()[0]}). Raise `memory_limit` where it is set (configs/project.yaml, "
                  "a profile's or configs/local/project.yaml, or DYNSEG_MEMORY_LIMIT), or remove it to let "
                  "DuckDB use what the machine has; fewer "
                  f"`threads` also need less memory.{_spill_note()}", highlight=False)
        raise typer.Exit(EXIT_DATA) from None


def _spill_note() -> str:
    """Where DuckDB spills above the limit, and the room left there: a full disk there ends a run
    with the same out-of-memory error."""
    import shutil

    from pipeline.jobs.data import spill_folder

    folder = spill_folder()
    try:
        free = shutil.disk_usage(folder.parent).free
    except OSError:
        return ""
    return (f" Above the limit DuckDB spills to {folder} ({free / 2**30:.1f} GiB free there): if that disk is "
            "full, free space or point TMPDIR at a larger one.")


def _changed_source(e: Exception) -> None:
    """A run that failed reading a source that changed under it (removed, rewritten midway): the
    change is what to say (exit 75, to retry), not the read error's traceback."""
    jobs = sys.modules.get("pipeline.jobs.data")
    if jobs is None or isinstance(e, (jobs.SourceChanged, jobs.DataError)):
        return
    problem = jobs.changed_sources()
    if problem is not None:
        raise problem from None


def _damaged_file(e: Exception) -> None:
    """A source file DuckDB could not decode midway (a damaged page: validation reads a file's
    footer and what its checks need, a query reads the rest), as one line naming the file (or, when
    DuckDB does not, the files it may be) and the fix. Through a streamed Arrow result it comes as an
    OSError without a file name, which would otherwise read as the output stream's failure."""
    duckdb = sys.modules.get("duckdb")
    if not (isinstance(e, OSError) and e.filename is None) and not (duckdb is not None and isinstance(e, duckdb.Error)):
        return
    text = str(e).strip()
    named = re.search(r'(?:Failed to read file|in Parquet file) "(.+?)"[:,]?\s*(.*)', text, re.DOTALL)
    if named is None and not re.search(r"corrupt|decompression|out of buffer|invalid string encoding|magic bytes",
                                       text, re.IGNORECASE):
        return
    if named is not None:
        where, why = named.group(1), named.group(2) or text
    else:
        jobs = sys.modules.get("pipeline.jobs.data")
        files = [str(f) for f in jobs.read_files()] if jobs is not None else []
        if not files:
            return
        where = files[0] if len(files) == 1 else f"one of {', '.join(files[:4])}{', …' if len(files) > 4 else ''}"
        why = text
    why = re.sub(r"^[A-Za-z ]*Error:\s*", "", why.splitlines()[0]).rstrip(".!")
    err.print(f"[bold red]Error:[/] cannot read {escape(where)}: {escape(why)}. The file is "
              "damaged or cut short (a copy or download that did not finish): export or copy it again; a glob reads "
              "every file it matches, so move a bad one out of its folder meanwhile. Nothing this command had not "
              "finished writing was kept.", highlight=False)
    raise typer.Exit(EXIT_DATA) from None


def _spark_failed(e: Exception) -> None:
    """Spark's failure as one paragraph, not 60-260 lines of Python and JVM stack: what Spark said
    (the Java exception's message), and where its settings come from. Spark's own log lines, above
    on stderr, keep the detail. Every write is atomic: nothing half-written is kept."""
    java = getattr(e, "java_exception", None) or getattr(e, "_origin", None)  # (py4j's error; pyspark's captured one)
    said = ""
    try:
        # the message, and its causes' down to the root: a bad spark.conf value read "Error while
        # instantiating 'SessionStateBuilder':" and nothing of the value at fault, which its cause names
        messages, cause = [], java
        while cause is not None and len(messages) < 8:
            text = " ".join(str(cause.getMessage() or "").split()).rstrip(":.").strip()
            if text and not any(text in m for m in messages):  # (a cause often repeats its effect's words)
                messages.append(text)
            cause = cause.getCause()
        said = ": ".join(messages)
    except Exception:  # the JVM is gone: its message with it
        said = ""
    said = said or str(e)
    if "JAVA_GATEWAY_EXITED" in said:
        said = "its JVM exited as it started (the lines above say why: often a setting Java refuses, such as a memory size)"
    first = next((line.strip() for line in said.splitlines() if line.strip()), type(e).__name__)
    first = first.rstrip(".") or type(e).__name__  # the sentence below adds its own
    if len(first) > 400:
        first = first[:400] + "…"
    where = (f"spark: in {_SPARK_SETTINGS}" if _SPARK_SETTINGS else
             "spark: in configs/project.yaml, the profile's or configs/local/project.yaml")
    err.print(f"[bold red]Spark failed:[/] {escape(first)}. Its settings come from {escape(where)}, over "
              "spark-defaults.conf in SPARK_CONF_DIR; Spark's log above may have the detail. Nothing this "
              "command had not finished writing was kept.", highlight=False)


#: The files whose spark: settings the command's config took (set as it is loaded)
_SPARK_SETTINGS = ""


def _disk_full(e: Exception) -> int | None:
    """One line for a DuckDB write that found the disk full (the workspace database at commit, an
    export's Parquet file), naming the file as the user knows it (not its hidden temp name); None
    for any other error."""
    text = str(e)
    if not re.search(r"No space left on device|Disk quota exceeded", text):
        return None
    file = re.search(r'file \\?"([^"\\]+)\\?"', text)
    where = _untemp(file.group(1)) if file else "the workspace"
    err.print(f"[bold red]Error:[/] no space left on the device writing {escape(where)}. Free some space there. "
              + _kept() + ".", highlight=False)
    return EXIT_DATA


def _kept(then: str = "") -> str:
    """What stands after a failure: the runs committed before it (a later step failed), or nothing
    and "run it again" (``then``: when)."""
    from pipeline.workspace import COMMITTED

    if COMMITTED:  # a step after the commit failed: running it again would replace a run that stands
        return (f"Done before the failure: {'; '.join(COMMITTED)}; what came after it was not done (the next "
                "`dynseg score` puts any export folder in place)")
    return f"Nothing of this one was kept (its writes are atomic, the database's in one transaction); run it again{then}"


def _untemp(path: str) -> str:
    """``/x/.2026-11-21.16037@host~ab12.tmp/a.parquet`` as ``/x/2026-11-21/a.parquet``: the path being
    written, without the temp name of :func:`pipeline.workspace.temp_sibling` (``.NAME.PID@HOST~XXXX.tmp``)."""
    return re.sub(r"(^|/)\.([^/]+?)\.\d+@[^/~]+~\w+\.tmp(?=/|$)", r"\1\2", path)


def _workspace_io(e: Exception) -> int | None:
    """One line for a database file DuckDB cannot open: held by another process (two runs at once
    on one workspace: :data:`EXIT_BUSY`, for a scheduler to retry), or on a read-only file system
    (:data:`EXIT_DATA`). The exit code when said; None (the traceback) otherwise."""
    text = str(e)
    file = re.search(r'file "([^"]+)"', text)
    where = file.group(1) if file else "the workspace database"
    from pipeline.workspace import held_elsewhere, lock_holder, lock_wait

    if held_elsewhere(e):
        holder = lock_holder(text)
        err.print(f"[bold red]Busy:[/] {escape(where)} is held by another process"
                  + (f" ({holder})" if holder else "") + ", a dynseg command or a notebook: one writes to a "
                  f"workspace at a time, and it did not let go in {lock_wait():g} s (DYNSEG_LOCK_WAIT). "
                  + _kept(" when the other has finished") + " (exit 75: retry later).", highlight=False)
        return EXIT_BUSY
    if "Could not set lock" in text:  # no lock at all: a file system without locks (SMB, 9p, NFS without lockd)
        err.print(f"[bold red]Error:[/] {escape(where)} cannot be locked ({escape(text.split(': ', 2)[-1][:200])}): "
                  "dynseg locks its database so that two commands never write it at once. Put the workspace "
                  "(DYNSEG_WORKSPACE) on a local file system.", highlight=False)
        return EXIT_DATA
    if "Read-only file system" in text or "Permission denied" in text:
        err.print(f"[bold red]Error:[/] {escape(where)} cannot be opened for writing ({'read-only file system' if 'Read-only' in text else 'permission denied'}). "
                  "The workspace (.dynseg/, or DYNSEG_WORKSPACE) must be writable.", highlight=False)
        return EXIT_DATA
    return None


@contextlib.contextmanager
def progress(description: str, total: int | None = None) -> Iterator:
    """A progress bar on stderr when it is a terminal; yields ``update(done, total)``. Not drawn
    elsewhere (a scheduler's log, a pipe), where rich would leave an empty line behind."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    with bar:
        task = bar.add_task(description, total=total)

        def update(done: int, total: int | None = None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextlib.contextmanager
def stages(description: str) -> Iterator:
    """Yields ``say(stage)``: on a terminal a spinner with the stage; elsewhere (a scheduler's log)
    one line per stage on stderr, with the UTC time and the seconds since the start, so a log shows
    where a long run is and how long each stage took (nothing was printed until the run ended)."""
    if err.is_terminal:
        with err.status(description) as status:
            yield lambda stage: status.update(f"{description}: {stage}")
        return
    import time
    from datetime import datetime, timezone

    start = time.monotonic()

    def say(stage: str) -> None:
        now = datetime.now(timezone.utc).strftime("%H:%M:%SZ")
        err.print(f"{now} {description}: {stage} (+{time.monotonic() - start:.1f} s)", markup=False, highlight=False)

    yield say


@contextlib.contextmanager
def staged_progress(description: str, total: int) -> Iterator:
    """Yields ``step(stage, done=None, total=None)`` for work in stages of which one counts items
    (train: its snapshots, then fitting, plots, MLflow): on a terminal one bar labelled with the
    stage (``done`` sets it, none advances it by one step); elsewhere a line per new stage on
    stderr, with the UTC time and the seconds since the start. The snapshots' bar sat full through
    the fitting, SHAP and logging, 60 % of a run, and a scheduler's log had nothing for 37 s."""
    import time
    from datetime import datetime, timezone

    start, said, staged = time.monotonic(), [None], [False]
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=err, transient=True, disable=not err.is_terminal)
    with bar:
        task = bar.add_task(description, total=total)

        def step(stage: str, done: int | None = None, of: int | None = None) -> None:
            if done is None:  # a stage counts once it is over: when the next one starts
                if staged[0]:
                    bar.advance(task)
                staged[0] = True
            else:
                bar.update(task, completed=done, total=of if of is not None else total)
            bar.update(task, description=f"{description}: {stage}")
            line = f"{description}: {stage}"
            if not err.is_terminal and line != said[0]:
                said[0] = line
                now = datetime.now(timezone.utc).strftime("%H:%M:%SZ")
                err.print(f"{now} {line} (+{time.monotonic() - start:.1f} s)", markup=False, highlight=False)

        yield step


def snapshot_steps(step: Callable, n: int, after: int = 0) -> Callable[[int, int | None], None]:
    """A training set's ``progress(done, of)`` on a :func:`staged_progress` bar of ``n`` snapshots
    (or ``of``, as the plan counts them) and ``after`` stages to follow."""
    return lambda done, of=None: step(f"building snapshots ({done}/{of or n})", done, (of or n) + after)


def kv_table(title: str, rows: dict) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows.items():
        t.add_row(str(k), f"{v:,}" if isinstance(v, int) else str(v))
    return t
