"""Reading named sources (Parquet/CSV files or globs, DuckDB tables) into the engine as raw views.

Nothing here interprets the data: a source becomes a view ``raw_<name>`` with the source's own
column names mapped to contract names. Problems that stop a source from being read at all
(missing file, empty file, wrong delimiter or encoding) come back as :class:`SourceError`.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator

from features.contract import CONTRACT
from features.normalize import EPOCH_UNITS, ident as _ident, is_numeric, literal as _quote
from features.writers import sweep_killed, writer_tag

_DELIMITERS = (";", "\t", "|", ",")


class SourceSpec(BaseModel):
    """A named input in ``configs/catalog.yaml``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["parquet", "csv", "duckdb"]
    path: str = Field(description="file, glob or DuckDB database file; relative to the project folder")
    table: str | None = Field(default=None, description="table name, for format: duckdb")
    delimiter: str = ","
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"
    columns: dict[str, str] = Field(
        default_factory=dict, description="contract column -> the source's column name, where they differ"
    )
    timestamp_format: str | list[str] | None = Field(
        default=None, description="text timestamps' form(s), strptime codes such as '%d/%m/%Y %H:%M' (default: ISO-8601)")
    decimal: Literal[".", ","] = Field(default=".", description="text numbers' decimal mark; with ',' a '.' groups thousands, with '.' a ','")
    null_ids: Literal["error", "drop"] = Field(
        default="error", description="events only: rows without a customer_id (a Segment or RudderStack tracks "
                                     "table's anonymous visits) are an error, or left out with a warning that counts them")
    future_events: Literal["error", "drop"] = Field(
        default="error", description="events only: rows timestamped after now (a device whose clock runs ahead) are "
                                     "an error, or left out of every run with a warning that counts them")

    @field_validator("timestamp_format")
    @classmethod
    def _formats(cls, value: str | list[str] | None) -> str | list[str] | None:
        forms = [value] if isinstance(value, str) else value or []
        if isinstance(value, list) and not value:
            raise ValueError("expected a strptime form such as '%d/%m/%Y %H:%M', or a list of them; found an empty list")
        if any(f in EPOCH_UNITS for f in forms):
            if len(forms) > 1:
                raise ValueError(f"an epoch unit ({', '.join(EPOCH_UNITS)}) stands alone: one column's numbers have one "
                                 f"unit; found {forms}")
            return value
        for form in forms:
            if "%" not in form:
                raise ValueError(f"{form!r} has no strptime code; expected a form such as '%d/%m/%Y %H:%M' "
                                 "(%d day, %m month, %Y year, %H hour, %M minute, %S second, %z offset), or, for "
                                 f"numbers since 1970-01-01 UTC, their unit: {', '.join(EPOCH_UNITS)}")
            try:
                duckdb.execute("SELECT try_strptime('', ?)", [form]).fetchall()
            except duckdb.Error as e:
                raise ValueError(f"{form!r} is not a strptime form DuckDB reads: {str(e).splitlines()[0]}") from None
        # Forms that put day and month in opposite orders read 05/11 as whichever matches first:
        # a silent shift of months for every day up to the 12th
        # when a text one writes is read by the other too (ISO's '%Y-%m-%d' beside '%d/%m/%Y' is
        # not: it was refused, and a log mixing them could not be read at all)
        orders = {f: f.index("%d") < f.index("%m") for f in forms if "%d" in f and "%m" in f}
        probe = datetime(2026, 11, 5, 10, 20, 30, tzinfo=timezone.utc)  # day 5, month 11: both read a date
        def reads(form: str, written_by: str) -> bool:
            return duckdb.execute("SELECT try_strptime(?, ?) IS NOT NULL", [probe.strftime(written_by), form]).fetchall()[0][0]

        clash = [(d, m) for d, df in orders.items() if df for m, mf in orders.items() if not mf
                 and (reads(d, written_by=m) or reads(m, written_by=d))]
        if clash:
            day_first, month_first = clash[0]
            raise ValueError(f"{day_first!r} and {month_first!r} put day and month in opposite orders: 05/11 would "
                             "read as 5 November or 11 May by which form matches first; keep the one order your "
                             "export writes")
        return value

    @property
    def timestamp_forms(self) -> tuple[str, ...]:
        """``timestamp_format`` as a tuple of forms (empty: ISO-8601)."""
        value = self.timestamp_format
        return (value,) if isinstance(value, str) else tuple(value or ())


class SourceBusy(ValueError):
    """A DuckDB source file another process holds open for writing (a warehouse load running):
    nothing to correct, so the CLI exits 75 (try again later) rather than 1 with "correct the file"."""

    try_later = True


class SourceError(Exception):
    """A source that cannot be read at all; the message says what to change (``fix``: what to do,
    when it is not correcting the file or its catalog entry)."""

    def __init__(self, message: str, fix: str | None = None):
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class ColumnStats:
    """What a Parquet footer says about a column over every row group of every file."""

    nulls: int
    #: per row group bounds as the footer gives them (text), for the row groups holding a value
    mins: tuple[str, ...]
    maxs: tuple[str, ...]


@dataclass(frozen=True)
class RawSource:
    name: str
    view: str
    files: tuple[Path, ...]
    columns: dict[str, str]  # contract/renamed column name -> DuckDB type
    rows: int
    #: Parquet sources: footer statistics of the columns every row group of every file describes
    #: (others are absent); lets validation skip a check the statistics show cannot fail
    stats: dict[str, ColumnStats] = field(default_factory=dict)
    #: Sources of several files: column -> the files that lack it (their rows read it as null)
    missing_in: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    #: Sources of several files: each file's own columns, as the file names them
    file_columns: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    #: Columns read under another name (``columns:`` in the catalog): view name -> the file's name
    source_names: dict[str, str] = field(default_factory=dict)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


#: A Parquet source file's stamp before a run reads it: its source's name and (size, modification
#: time, inode). (A CSV source is parsed once into a copy; a DuckDB file is locked while read.)
Stamps = dict[Path, tuple[str, tuple[int, int, int]]]


def source_stamps(specs: dict[str, SourceSpec], base_dir: Path) -> Stamps:
    """The stamps of every Parquet source's files, taken before a run reads them (files that do
    not resolve are left to validation to report)."""
    out: Stamps = {}
    for name, spec in specs.items():
        if spec.format != "parquet":
            continue
        try:
            files = resolve_files(spec, base_dir, name)
        except SourceError:
            continue
        for f in files:
            if (stamp := _stamp(f)) is not None:
                out[f] = (name, stamp)
    return out


def changed_files(stamps: Stamps) -> list[tuple[str, Path, str]]:
    """The files replaced, rewritten or removed since ``stamps`` were taken: (source, file, what
    happened). A run reads its sources more than once (validation, then its queries): an export
    that lands midway would give results from data that was never validated."""
    changed = []
    for f, (name, then) in stamps.items():
        now = _stamp(f)
        if now != then:
            changed.append((name, f, "removed" if now is None else "replaced" if now[2] != then[2] else "rewritten"))
    return changed


def glob_files(pattern: Path) -> list[Path]:
    """The files ``pattern`` matches, its folders that exist as named taken literally: a workspace
    in a folder named ``ws[1]`` (``{workspace}/data/*.parquet``) matched nothing as a glob reads
    ``[1]``. The pattern applies from the deepest of its parent folders that exists."""
    return [Path(p) for p in glob.glob(literal_folders(pattern), recursive=True) if Path(p).is_file()]


def literal_folders(pattern: Path) -> str:
    """``pattern`` as a glob whose deepest existing parent folder is escaped (read as named)."""
    pattern = Path(pattern)
    root = next((p for p in pattern.parents if p.is_dir()), None)
    if root is None:
        return str(pattern)
    return str(Path(glob.escape(str(root))) / pattern.relative_to(root))


def resolve_files(spec: SourceSpec, base_dir: Path, name: str) -> tuple[Path, ...]:
    path = Path(spec.path)
    if not path.is_absolute():
        path = base_dir / path
    if glob.has_magic(str(path)) and not path.is_file():  # a file named `events[1].csv` is that file
        # files only: DuckDB would read every file under a folder the glob matched
        files = tuple(sorted(glob_files(path)))
        if not files:
            raise SourceError(
                f"source '{name}': the glob {path} matches no file; check `path` in configs/catalog.yaml"
            )
        return files
    if not path.exists():
        optional = (f"; '{name}' is optional: without such a file, remove its entry from configs/catalog.yaml"
                    if name in ("customers", "identities") else "")
        # where `dynseg data generate` writes (the demo's catalog)
        demo = (" (for the demo data run `dynseg data generate` first)"
                if path.parent.name == "data" and path.name == f"{name}.parquet" else "")
        raise SourceError(f"source '{name}': file {path} does not exist; check `path` in configs/catalog.yaml{optional}{demo}")
    if path.is_dir():
        # DuckDB would read every file under it, recursively: old copies and other tables too.
        suffix = {"parquet": "**/*.parquet", "csv": "**/*.csv"}.get(spec.format, "<file>")
        raise SourceError(
            f"source '{name}': path {spec.path or '(empty)'} is a folder ({path}); expected a file or a glob. "
            f"Set `path` in configs/catalog.yaml to the file, or to a glob such as {Path(spec.path or '.') / suffix}"
        )
    return (path,)


def _reader_sql(spec: SourceSpec, files: tuple[Path, ...], con: duckdb.DuckDBPyConnection, name: str) -> str:
    file_list = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    if spec.format == "parquet":
        return f"SELECT * FROM read_parquet({file_list}, union_by_name = true)"
    if spec.format == "csv":
        # Everything as text: the validator parses and counts what does not convert, with examples.
        opts = f"all_varchar = true, header = true, delim = {_quote(spec.delimiter)}, union_by_name = true"
        if spec.encoding != "utf-8":
            opts += f", encoding = {_quote(spec.encoding)}"
        return f"SELECT * FROM read_csv({file_list}, {opts})"
    if spec.table is None:
        raise SourceError(f"source '{name}': format duckdb needs `table:` in configs/catalog.yaml")
    alias = f"src_{name}"
    attached = {r[0] for r in con.execute("SELECT database_name FROM duckdb_databases()").fetchall()}
    if alias not in attached:
        try:
            con.execute(f"ATTACH {_quote(str(files[0]))} AS {_ident(alias)} (READ_ONLY)")
        except duckdb.IOException as e:
            if "Could not set lock" not in str(e):
                raise
            holder = re.search(r"\(PID (\d+)\)", str(e))
            raise SourceBusy(f"{files[0]}: source '{name}' is a DuckDB database that another process "
                             + (f"(PID {holder.group(1)}) " if holder else "")
                             + "holds open for writing (a load running?); try again once it has finished. "
                             "Nothing was read or written") from None
    schema, _, table = spec.table.rpartition(".")
    found = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = $db "
        "UNION ALL SELECT schema_name, view_name FROM duckdb_views() WHERE database_name = $db AND NOT internal",
        {"db": alias}).fetchall()
    if ((schema or "main").lower(), table.lower()) not in {(s.lower(), t.lower()) for s, t in found}:
        names = sorted(t if s == "main" else f"{s}.{t}" for s, t in found)
        raise SourceError(
            f"{files[0]}: source '{name}' names table {spec.table!r}, which this database does not have; "
            f"it has {', '.join(names) if names else 'no tables'}. Set `table:` for '{name}' in "
            "configs/catalog.yaml to one of them (schema.table outside the main schema)")
    return f"SELECT * FROM {_ident(alias)}.{_ident(schema or 'main')}.{_ident(table)}"


def _check_csv_header(cols: list[str], spec: SourceSpec, name: str, path: Path) -> None:
    if len(cols) != 1:
        return
    for d in _DELIMITERS:
        if d != spec.delimiter and d in cols[0]:
            shown = _shown(d)
            raise SourceError(
                f"{path}: source '{name}' reads as a single column {cols[0]!r}; the file looks "
                f"'{shown}'-delimited, not '{spec.delimiter}'. Set `delimiter: \"{shown}\"` for "
                f"'{name}' in configs/catalog.yaml"
            )


def _check_repeated_header_names(path: Path, spec: SourceSpec, name: str) -> None:
    """A CSV header naming a column twice (``amount,amount``: one of them meant to be another
    column) is refused; DuckDB would rename the second one and the intended column would be
    missing in silence."""
    import csv
    import io

    head = _head(path)
    if not head:
        return
    text = head.decode(spec.encoding, errors="replace").lstrip("\ufeff")
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0].rstrip("\r")), delimiter=spec.delimiter), [])
    _check_repeated_names(header, path, name)


def _check_repeated_names(names: list[str], path: Path, name: str) -> None:
    """Two columns of one name, or of names that differ only in case (``country`` and ``Country``):
    DuckDB reads names case-insensitively and renames the second (``Country_1``), so a mapping or
    an attribute list naming it found a column the file does not have, or another one."""
    seen: dict[str, tuple[str, int]] = {}
    for i, col in enumerate(names, 1):
        if col.casefold() in seen:
            first, j = seen[col.casefold()]
            if first == col:
                raise SourceError(f"{path}: source '{name}' names column {col!r} twice in its header (columns "
                                  f"{j} and {i}); rename the one that is meant to be another column")
            raise SourceError(f"{path}: source '{name}' has columns {first!r} and {col!r} (columns {j} and {i}), whose "
                              "names differ only in case: DuckDB reads names case-insensitively and would rename the "
                              f"second to '{col}_1'; rename or drop one of them")
        seen[col.casefold()] = (col, i)


def register_source(con: duckdb.DuckDBPyConnection, name: str, spec: SourceSpec, base_dir: Path) -> RawSource:
    """Create the view ``raw_<name>`` over a source, with contract column names applied."""
    files = resolve_files(spec, base_dir, name)
    for f in files:
        if spec.format != "duckdb" and f.stat().st_size == 0:
            raise SourceError(f"{f}: source '{name}' is an empty file (0 bytes); expected a {spec.format} file with rows")
    if spec.format == "csv":
        # UTF-16 (Excel's "Unicode text", PowerShell's default) read as another encoding, or
        # big-endian (which DuckDB reads as a file without rows, or with NULs in every name, in
        # silence): said before reading
        for f in files:
            order = _utf16(_head(f, 4096) or b"")
            if order == "be":
                raise SourceError(f"{f}: source '{name}' could not be read as CSV: {_BIG_ENDIAN}")
            if order == "le" and spec.encoding != "utf-16":
                raise SourceError(f"{f}: source '{name}' could not be read as CSV: it is UTF-16 text, read as "
                                  f"{spec.encoding}; set `encoding: utf-16` for '{name}' in configs/catalog.yaml")
        if spec.encoding == "latin-1":
            # UTF-8 text read as Latin-1 reads Bücher as BÃ¼cher: a second category, an event name
            # no role maps, with no error (a glob of one UTF-8 export beside Latin-1 ones, after
            # `encoding: latin-1` was set for the others)
            utf8 = [f for f in files if _utf8_beyond_ascii(f)]
            if utf8:
                shown = ", ".join(f.name for f in utf8[:3]) + (", ..." if len(utf8) > 3 else "")
                some = len(utf8) < len(files)
                raise SourceError(
                    f"{utf8[0]}: source '{name}' is read as Latin-1 (`encoding: latin-1` in configs/catalog.yaml), "
                    f"but {f'{len(utf8)} of its {len(files)} files ({shown}) ' if some else 'its files ' if len(files) > 1 else 'it '}"
                    f"{'is' if len(utf8) == 1 else 'are'} UTF-8 text "
                    "with letters beyond ASCII, which Latin-1 misreads (ü as Ã¼). "
                    + ("One encoding applies to every file of a source: re-save the Latin-1 files as UTF-8 and "
                       "remove `encoding: latin-1`" if some else "Remove `encoding: latin-1`"))
    try:
        rel = con.sql(_reader_sql(spec, files, con, name))
        cols = list(rel.columns)
    except duckdb.Error as e:
        raise SourceError(explain_read_error(e, spec, name, files)) from None
    if spec.format == "csv":
        _check_csv_header(cols, spec, name, files[0])
        for f in files:
            _check_repeated_header_names(f, spec, name)
    elif spec.format == "parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(files[0]).names  # the footer only
        except Exception:  # (what DuckDB read, Arrow may not: the check is then left out)
            names = []
        _check_repeated_names(names, files[0], name)
    _check_mapping_names(spec, name, cols)
    renames = _renames(spec, name)
    missing_renames = [src for src in renames if src not in cols]
    if missing_renames:
        raise SourceError(
            f"source '{name}': `columns` in configs/catalog.yaml names {missing_renames} but the source "
            f"has only {cols}"
        )
    # A mapping wins over a column of the source that already bears the contract name
    # (``columns: {amount: net_amount}`` in a file that also has ``amount``): that column is not
    # read, as it would otherwise sit beside the mapped one under the same name.
    # (DuckDB's names ignore case: an `Amount` column is shadowed as much as `amount`.)
    shadowed = {k.lower() for k in spec.columns}

    def read(c: str) -> bool:
        return c in renames or c.lower() not in shadowed

    unread = {c for c in cols if not read(c)}
    cols = [c for c in cols if read(c)]
    select = ", ".join(
        f"{_ident(c)} AS {_ident(renames[c])}" if c in renames else _ident(c) for c in cols
    )
    view = f"raw_{name}"
    try:
        if spec.format == "csv":
            rel = _parsed_once(con, rel, name)
        con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT {select} FROM ({rel.sql_query()})")
        rows = con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
        types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {view})").fetchall())
    except duckdb.Error as e:
        raise SourceError(explain_read_error(e, spec, name, files)) from None
    stats = _parquet_stats(con, files, renames, unread) if spec.format == "parquet" else {}
    per_file: dict[Path, tuple[str, ...]] = {}
    if len(files) > 1 and spec.format != "duckdb":
        # Read by name, the files' union has every column any of them has: a file without one
        # reads as nulls there, which the checks would report as null values, not a missing column.
        # The contract's text columns (ids, names): read together, a file's numbers would become
        # text ('91' beside 'c0000091') in silence. Column -> text|number -> [(file, type, source name)].
        texts = {c.name for c in CONTRACT.get(name, ()) if c.type == "string"}
        kinds: dict[str, dict[str, list[tuple[Path, str, str]]]] = {}
        for f in files:
            try:
                one = con.sql(_reader_sql(spec, (f,), con, name))
            except duckdb.Error as e:
                raise SourceError(explain_read_error(e, spec, name, (f,))) from None
            kept = [(c, str(ty)) for c, ty in zip(one.columns, one.types) if read(c)]
            per_file[f] = tuple(c for c, _ in kept)  # as the file names them
            for c, ty in kept:
                kind = "text" if ty == "VARCHAR" else "number" if is_numeric(ty) else None
                if kind and renames.get(c, c) in texts:
                    kinds.setdefault(renames.get(c, c), {}).setdefault(kind, []).append((f, ty, c))
        for col, seen in kinds.items():
            if len(seen) > 1:  # a file whose column holds no value (all missing: a float of NaNs) agrees
                held = [(f, ty) for f, ty, c in seen["number"]
                        if con.sql(f"SELECT count({_ident(c)}) FROM ({_reader_sql(spec, (f,), con, name)})").fetchall()[0][0]]
                if held:
                    (tf, tt, _), (nf, nt) = seen["text"][0], held[0]
                    raise SourceError(
                        f"source '{name}': column '{col}' is text in {tf} ({tt}) but numbers in {nf} ({nt}); the files "
                        f"of one source must agree. Write '{col}' as text in every file")
    missing = {renames.get(c, c): tuple(f for f, have in per_file.items() if c not in have) for c in cols}
    return RawSource(name, view, files, types, rows, stats, {c: fs for c, fs in missing.items() if fs}, per_file,
                     {renames[c]: c for c in cols if c in renames})


#: The temporary copies of CSV sources made on a connection (id -> their removers)
_COPIES: dict[int, list[weakref.finalize]] = {}


def _parsed_once(con: duckdb.DuckDBPyConnection, rel: duckdb.DuckDBPyRelation, name: str) -> duckdb.DuckDBPyRelation:
    """A CSV source parsed once, into a temporary Parquet file (its text as text, rows in order)
    that every later read of the source reads instead: validation and the feature query read a
    source many times, and each read of a CSV file parses it again. At 5M events this took a
    feature build from 13.3 s to about 9 s (README, Benchmarks). The file is removed with the
    connection (:func:`drop_copies`, or when it is collected, or when the process ends); one left
    by a killed run (its folder names the process) is removed by the next copy made on this host."""
    sweep_killed("dynseg-csv-")
    folder = Path(tempfile.mkdtemp(prefix=f"dynseg-csv-{name}-{writer_tag()}~"))
    remove = weakref.finalize(con, shutil.rmtree, folder, ignore_errors=True)
    _COPIES.setdefault(id(con), []).append(remove)
    path = folder / f"{name}.parquet"
    try:
        con.execute(f"COPY ({rel.sql_query()}) TO {_quote(str(path))} (FORMAT parquet)")
    except duckdb.Error as e:
        if str(folder) not in str(e):
            raise  # reading the CSV failed: explain_read_error says why
        remove()
        raise SourceError(
            f"source '{name}': its temporary copy (a CSV source is parsed once into Parquet, a fifth to a third of the "
            f"CSV's size) could not be written in {folder.parent}: {str(e).splitlines()[-1].strip()}",
            f"free space in {folder.parent}, or point TMPDIR at a folder with room (the file is fine)") from None
    return con.sql(f"SELECT * FROM read_parquet({_quote(str(path))})")


def drop_copies(con: duckdb.DuckDBPyConnection) -> None:
    """Remove the temporary copies made on ``con`` now (it is closed, or about to be): an
    exception that keeps the connection alive (a notebook's last error) would keep them too."""
    for remove in _COPIES.pop(id(con), []):
        remove()


def _check_mapping_names(spec: SourceSpec, name: str, cols: list[str]) -> None:
    """The keys of ``columns:`` are the contract's names. A misspelled one (``ammount: order_value``)
    used to read the file's column under a name nothing uses, in silence: every spend was 0. Refused,
    every such key at once: a key that is no contract column of the source, except, for customers, a
    profile attribute read under another name (``tier: loyalty_tier_v2``), which may be any name not
    within a letter or two of a contract column (``customer_type`` is an attribute, ``email_concent``
    a typo)."""
    import difflib

    contract = [c.name for c in CONTRACT.get(name, ())]
    if not contract:
        return
    said = []
    for key, src in spec.columns.items():
        if key in contract:
            continue
        if src in contract and key in cols:
            said.append(f"`{key}: {src}` reads the other way round: the key is the contract's name, the value your "
                        f"column. Write `{src}: {key}`")
            continue
        close = difflib.get_close_matches(key.lower(), contract, n=1, cutoff=0.85 if name == "customers" else 0.75)
        if close:
            said.append(f"`{key}: {src}`: {key!r} is not a column of the data contract; did you mean {close[0]!r}?"
                        + (" (For customers, a key that is none of them reads a profile attribute under that name, "
                           "but this one is too close to be meant so; rename it if it is an attribute.)"
                           if name == "customers" else ""))
        elif name != "customers":
            said.append(f"`{key}: {src}`: {key!r} is not a column of the data contract for {name}")
    if said:
        raise SourceError(f"source '{name}': `columns` in configs/catalog.yaml: {'; '.join(said)}. The keys are "
                          f"dynseg's names ({', '.join(contract)}), the values your file's",
                          fix=f"correct `columns` under sources.{name} in configs/catalog.yaml")


def _renames(spec: SourceSpec, name: str) -> dict[str, str]:
    """The source's column -> the contract name it is read as; one source column for one name."""
    by_source: dict[str, list[str]] = {}
    for dst, src in spec.columns.items():
        by_source.setdefault(src, []).append(dst)
    for src, dsts in by_source.items():
        if len(dsts) > 1:
            raise SourceError(
                f"source '{name}': `columns` in configs/catalog.yaml maps {' and '.join(map(repr, dsts))} both to "
                f"the source's column {src!r}; each contract column needs a column of its own. Keep the one "
                f"{src!r} holds and remove the other{'s' if len(dsts) > 2 else ''}")
    return {src: dsts[0] for src, dsts in by_source.items()}


def _parquet_stats(con: duckdb.DuckDBPyConnection, files: tuple[Path, ...], renames: dict[str, str],
                   unread: set[str] = frozenset()) -> dict[str, ColumnStats]:
    """Footer statistics per column (named as in the view), only for columns that every file has and
    every row group describes: a null count, and bounds wherever the row group holds a value. Only
    the ``min_value``/``max_value`` fields count, never the deprecated ``min``/``max`` that old
    writers filled in signed byte order."""
    file_list = "[" + ", ".join(_quote(str(f)) for f in files) + "]"
    # A row group describes a column when it has a null count and, if it holds any value, both
    # bounds; only those holding a value give bounds.
    holds_value = "coalesce(stats_null_count < num_values, TRUE)"
    try:
        rows = con.execute(f"""
            SELECT path_in_schema, count(DISTINCT file_name),
                   bool_and(coalesce(stats_null_count IS NOT NULL AND (NOT {holds_value}
                            OR (stats_min_value IS NOT NULL AND stats_max_value IS NOT NULL)), FALSE)),
                   sum(stats_null_count),
                   coalesce(list(stats_min_value) FILTER (WHERE {holds_value}), []),
                   coalesce(list(stats_max_value) FILTER (WHERE {holds_value}), [])
            FROM parquet_metadata({file_list}) GROUP BY 1""").fetchall()
    except duckdb.Error:
        return {}
    return {
        renames.get(col, col): ColumnStats(int(nulls), tuple(mins), tuple(maxs))
        for col, n_files, complete, nulls, mins, maxs in rows
        if complete and n_files == len(files) and "." not in col  # top-level columns only
        and col not in unread  # a column the mapping puts another in place of (as the file names it)
    }


def explain_read_error(e: duckdb.Error, spec: SourceSpec, name: str, files: tuple[Path, ...]) -> str:
    msg = str(e)
    where = files[0] if len(files) == 1 else f"{files[0].parent}/{Path(spec.path).name}"
    m = re.search(r"file = (\S+)", msg)
    if m:
        where = m.group(1)
    if "Invalid unicode" in msg or "not utf-8 encoded" in msg:
        line = re.search(r"Line: (\d+)", msg)
        at = f" (line {line.group(1)})" if line else ""
        # one encoding reads every file of a glob: with others in UTF-8 beyond ASCII, latin-1
        # would misread them (Bücher as BÃ¼cher, a second category), in silence
        others = [f for f in files if str(f) != str(where) and _utf8_beyond_ascii(f)] if len(files) > 1 else []
        if others:
            shown = ", ".join(f.name for f in others[:3]) + (", ..." if len(others) > 3 else "")
            return (f"{where}: source '{name}' is not valid {spec.encoding}{at}, but {len(others)} other file"
                    f"{'s' if len(others) != 1 else ''} of it ({shown}) {'are' if len(others) != 1 else 'is'} UTF-8 "
                    "with letters beyond ASCII, which `encoding: latin-1` would misread (ü as Ã¼): one encoding "
                    "applies to every file of a source. Re-save this file as UTF-8")
        return (
            f"{where}: source '{name}' is not valid {spec.encoding}{at}. Re-save it as UTF-8, or set "
            f"`encoding: latin-1` (or utf-16) for '{name}' in configs/catalog.yaml"
        )
    entry = f"for '{name}' in configs/catalog.yaml"
    ragged = re.search(r"CSV Error on Line: (\d+)\s*\nOriginal Line: (.*)\nExpected Number of Columns: (\d+) Found: (\d+)", msg)
    if ragged:
        line, text, expected, found = ragged.groups()
        return (f"{where}: source '{name}': "
                f"{_ragged(int(line), int(found), int(expected), text, spec.delimiter, recount=True)}")
    head = _head(Path(where) if Path(where).is_file() else files[0])
    if spec.format == "parquet" and "magic bytes" in msg and head is not None and b"\0" not in head:
        return f"{where}: source '{name}' is not a Parquet file; it looks like text (CSV?). Set `format: csv` {entry}"
    if spec.format == "csv" and head is not None and head.startswith(b"PAR1"):
        return f"{where}: source '{name}' is a Parquet file, not CSV. Set `format: parquet` {entry}"
    if spec.format == "csv" and "sniffing" in msg and head is not None:
        path = Path(where) if Path(where).is_file() else files[0]
        return (f"{where}: source '{name}' could not be read as CSV: "
                f"{_csv_diagnosis(head, spec.delimiter, entry, path, spec.encoding)}")
    first = msg.strip().splitlines()[0] if msg.strip() else type(e).__name__
    return f"{where}: source '{name}' could not be read as {spec.format}: {first}"


def _utf8_beyond_ascii(path: Path, size: int = 4 << 20) -> bool:
    """Whether a file's first ``size`` bytes are UTF-8 text with a character beyond ASCII (ü as
    two bytes): Latin-1 text with accents is almost never valid UTF-8 too."""
    import codecs

    head = _head(path, size)
    if not head or head.isascii():
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end is no error
    except UnicodeDecodeError:
        return False
    return True


def _head(path: Path, size: int = 65_536) -> bytes | None:
    """The first bytes of a file as text would be read: a ``.gz`` file's decompressed (DuckDB reads
    ``.csv.gz``; its compressed bytes read as a header crashed the header checks)."""
    import gzip

    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read(size)
        with open(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError):
        return None


_BIG_ENDIAN = ("it is UTF-16 big-endian text, which DuckDB reads only little-endian: convert it to UTF-8 "
               "(iconv -f UTF-16BE -t UTF-8 FILE > FILE.utf8.csv) and point the catalog at the result")


def _utf16(head: bytes) -> str | None:
    """``le`` or ``be`` when the file's first bytes are UTF-16 of either order, else None."""
    if head[:2] == b"\xff\xfe":
        return "le"
    if head[:2] == b"\xfe\xff":
        return "be"
    pairs = head[: len(head) // 2 * 2]
    if len(pairs) >= 4 and pairs[1::2].count(0) > 0.9 * len(pairs) / 2:
        return "le"
    if len(pairs) >= 4 and pairs[0::2].count(0) > 0.9 * len(pairs) / 2:
        return "be"
    return None


def _csv_diagnosis(head: bytes, delimiter: str, entry: str, path: Path | None = None, encoding: str = "utf-8") -> str:
    """Why DuckDB found no consistent dialect, from the file's first lines: a binary file, another
    delimiter that splits every line alike, or the first line whose field count differs from the
    header's (read through the whole file when the first lines hold none)."""
    import csv
    import io

    if b"\0" in head:  # (UTF-16, a NUL beside every ASCII character, is told before reading: register_source)
        return "it is not a text file (it holds NUL bytes); point the catalog at the CSV export"
    lines = head.decode("utf-8", errors="replace").splitlines()
    lines = lines[:-1] or lines  # the last line may be cut off by the read
    sample = "\n".join(lines[:200])

    def split_on(d: str) -> list[list[str]]:
        return list(csv.reader(io.StringIO(sample), delimiter=d))

    for d in _DELIMITERS:
        if d == delimiter:
            continue
        counts = {len(r) for r in split_on(d) if r}
        if len(counts) == 1 and counts.pop() > 1:
            shown = _shown(d)
            return f"its lines split alike on {shown!r}, not on {delimiter!r}. Set `delimiter: \"{shown}\"` {entry}"
    rows = split_on(delimiter)
    for i, r in enumerate(rows[1:], 2):
        if r and len(r) != len(rows[0]):
            return _ragged(i, len(r), len(rows[0]), lines[i - 1], delimiter)
    if path is not None and rows:
        with open(path, newline="", encoding=encoding, errors="replace") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, [])
            # the sniffer reads the first 20,480 rows by default: the line that failed it is among them
            for r in itertools.islice(reader, 100_000):
                if r and len(r) != len(header):
                    return _ragged(reader.line_num, len(r), len(header), delimiter.join(r), delimiter)
    return f"DuckDB found no consistent way to split its lines on {delimiter!r}; check the delimiter and quoting {entry}"


def _ragged(line: int, found: int, expected: int, text: str, delimiter: str, recount: bool = False) -> str:
    """A row whose field count is not the header's, with the fix for too many fields (an unquoted
    delimiter) or too few (a row cut short). ``recount``: ``found`` is DuckDB's, which stops counting
    at one more than expected (a row of 10 fields read "9 fields where the header has 8"): the
    row's own text, as DuckDB quotes it, is counted instead."""
    import csv

    counted = next(csv.reader([text], delimiter=delimiter), None) if recount and text else None
    found = len(counted) if counted and len(counted) != expected else found
    fix = (f"A value holding the delimiter {delimiter!r} must be quoted; fix or drop the row" if found > expected else
           "The row is cut short (a file cut off mid-row, or values missing with their delimiters): complete or "
           "drop it")
    return f"line {line} has {found} fields where the header has {expected}: {text[:120]!r}. {fix}"


def _shown(delimiter: str) -> str:
    """A delimiter as it is written in configs/catalog.yaml (a tab as ``\\t``)."""
    return "\\t" if delimiter == "\t" else delimiter
