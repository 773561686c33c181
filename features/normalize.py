"""Typed, UTC-normalised SQL expressions for contract columns, whatever the source's physical type.

This is the one place that decides how a raw value becomes a contract value. The validator uses
the ``bad`` predicate to count and show values that do not convert; the loader uses ``expr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from features.contract import Column

INTEGER_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
_NUMERIC_PREFIXES = ("DECIMAL", "DOUBLE", "FLOAT", "REAL")
_NAIVE_TS = {"TIMESTAMP", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE"}
# Klaviyo's and Shopify's consent states count too (SUBSCRIBED, NEVER_SUBSCRIBED, not_subscribed)
_TRUE = ("true", "t", "yes", "y", "1", "subscribed")
_FALSE = ("false", "f", "no", "n", "0", "unsubscribed", "never_subscribed", "not_subscribed")


SQL_TYPE = {"string": "VARCHAR", "timestamp": "TIMESTAMP", "double": "DOUBLE", "bool": "BOOLEAN"}


@dataclass(frozen=True)
class Typed:
    expr: str  # SQL producing the contract value (NULL where it does not convert)
    bad: str  # SQL predicate: a value is present but does not convert


def is_numeric(raw_type: str) -> bool:
    """A DuckDB type whose values are numbers (read as a ``double`` contract column as they are)."""
    t = raw_type.upper()
    return t in INTEGER_TYPES or t.startswith(_NUMERIC_PREFIXES)


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A text as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def typed(column: Column, raw_type: str, forms: tuple[str, ...] = (), decimal: str = ".") -> Typed | None:
    """How to read ``column`` from a raw column of DuckDB type ``raw_type``; None if it cannot be.
    ``forms`` (``timestamp_format``) and ``decimal`` (a source's catalog entry) say how its text
    timestamps and numbers are written, where they are not ISO-8601 and '.'."""
    c = ident(column.name)
    t = raw_type.upper()
    if t == '"NULL"':  # a column with no values at all (Parquet's null type) reads as all-NULL
        return Typed(f"CAST({c} AS {SQL_TYPE[column.type]})", "FALSE")
    if column.type == "string":
        # No trim here: this expression runs on every read of the canonical views, and trimming
        # every id costs more than the rest of the scan. Blank values are caught by `blank()`.
        if t == "VARCHAR":
            if column.name == "event_id":
                # optional, so no blank check: an empty id (a Parquet file written from an export
                # whose orders alone have ids) is none, as an empty CSV field is; as '' it was one
                # id shared by every such row ("used by different events", and no run could start)
                return Typed(f"NULLIF(trim({c}), '')", "FALSE")
            return Typed(c, "FALSE")
        if t in INTEGER_TYPES:
            return Typed(f"CAST({c} AS VARCHAR)", "FALSE")
        return None
    if column.type == "timestamp":
        if forms and forms[0] in EPOCH_UNITS and (is_numeric(t) or t == "VARCHAR"):
            # Numbers since 1970-01-01 UTC in the unit the catalog names (GA4's BigQuery export
            # writes microseconds); read through a double, exact for microseconds up to 2255. A
            # value outside 1900-3000 does not convert: a wrong unit gives years like 58000.
            unit = EPOCH_UNITS[forms[0]]
            n = f"TRY_CAST(NULLIF(trim({c}), '') AS DOUBLE)" if t == "VARCHAR" else f"CAST({c} AS DOUBLE)"
            us = f"({n} * {unit})"
            exact = f"round({us})"
            if t == "VARCHAR":
                # Text is read exactly: finer than a microsecond is cut, as with text timestamps
                # (1772409599.9999996 s, 0.4 us before a cutoff, came out at it through the
                # double). Within 1900-3000 the product fits DECIMAL(38, 18).
                exact = f"coalesce(floor(TRY_CAST(NULLIF(trim({c}), '') AS DECIMAL(38, 18)) * {unit}), {exact})"
            e = f"(CASE WHEN {us} BETWEEN {_EPOCH_LOW} AND {_EPOCH_HIGH} THEN make_timestamp(CAST({exact} AS BIGINT)) END)"
            given = f"NULLIF(trim({c}), '')" if t == "VARCHAR" else c
            return Typed(e, f"({given} IS NOT NULL AND {e} IS NULL)")
        if t in _NAIVE_TS:
            return Typed(f"CAST({c} AS TIMESTAMP)", "FALSE")
        if t in ("TIMESTAMP_NS", "TIMESTAMPTZ_NS"):
            # Nanoseconds (pandas, Spark, Arrow write them): cut down to the microsecond, as text
            # timestamps are. DuckDB's cast rounds: an event 1 ns before a cutoff came out at it.
            # The floor of the epoch's nanoseconds (// and % truncate toward zero before 1970);
            # an aware value's epoch is its UTC instant.
            us = f"(epoch_ns({c}) // 1000 - CAST(epoch_ns({c}) % 1000 < 0 AS BIGINT))"
            return Typed(f"make_timestamp({us})", "FALSE")
        if t == "TIMESTAMP WITH TIME ZONE":
            # its UTC instant (the epoch), not timezone('UTC', ...): 8x the time on every read
            return Typed(f"make_timestamp(epoch_us({c}))", "FALSE")
        if (t == "VARCHAR" or t in INTEGER_TYPES) and forms:
            # The source's own form(s): strptime codes; a value in none of them does not convert
            # (no ISO fallback: 01/02 read both ways would be a silent month's shift). Without %z,
            # a value is UTC, as ISO text without an offset is. An offset (%z) or a zone (%Z) is
            # held to what ISO text is held to below. Whole numbers are read as their digits: a
            # Parquet file from pandas' read_csv or a BigQuery export types GA4's event_date 20260108
            # as an integer (a CSV source's columns are all text).
            if t != "VARCHAR":
                c = f"CAST({c} AS VARCHAR)"
            v = f"NULLIF(trim({c}), '')"
            if any("%z" in f for f in forms):  # ISO's Z for UTC, which %z does not read
                v = f"regexp_replace({v}, '([0-9])Z$', '\\1+00:00')"
            # One try_strptime per form, first hit kept: given a list, DuckDB 2.0 carries the offset
            # of a row read by a %z form over to the next rows read by a form without one (a
            # 23:00 UTC purchase after a -05:00 row came out at 04:00 the next day).
            e = ("make_timestamp(coalesce("
                 + ", ".join(f"epoch_us(try_strptime({v}, {literal(f)}))" for f in forms) + "))")
            zoned = [_abbreviated(c)] if any("%Z" in f for f in forms) else []
            zoned += [_impossible_offset(c)] if any("%z" in f for f in forms) else []
            return Typed(e, f"(NULLIF(trim({c}), '') IS NOT NULL AND ({' OR '.join([f'{e} IS NULL', *zoned])}))")
        if t == "VARCHAR":
            # With the session time zone at UTC, a string without an offset is read as UTC.
            e = f"make_timestamp(epoch_us({iso_timestamptz(f'NULLIF(trim({c}), {chr(39)}{chr(39)})')}))"
            return Typed(e, f"(NULLIF(trim({c}), '') IS NOT NULL AND ({e} IS NULL OR {_abbreviated(c)} OR "
                            f"{_impossible_offset(c)}))")
        return None
    if column.type == "double":
        # NaN is a missing value, as pandas reads it (Spark and Arrow write it where pandas writes
        # null; some exports write the text 'NaN'): summed, one NaN made a customer's spend NaN.
        # (Not isnan(x) or NULLIF(x, 'NaN'): DuckDB decides those from Parquet statistics, which
        # leave NaN out, and folds them to false; isfinite it evaluates.)
        if t.startswith(("DOUBLE", "FLOAT", "REAL")):
            return Typed(_not_nan(f"CAST({c} AS DOUBLE)"), "FALSE")
        if is_numeric(t):
            return Typed(f"CAST({c} AS DOUBLE)", "FALSE")
        if t == "VARCHAR" and decimal == ",":
            # A decimal comma: 1.234,56 or 1234,56; a '.' only between groups of three digits after
            # a first group that starts with 1-9, so that 95.48 or 0.500 (a point written by
            # mistake) does not convert rather than read 9548 or 500. NaN is missing, as with '.'.
            v = f"trim({c})"
            e = (f"(CASE WHEN regexp_matches({v}, '{DECIMAL_COMMA}') "
                 f"THEN TRY_CAST(replace(replace({v}, '.', ''), ',', '.') AS DOUBLE) END)")
            return Typed(e, f"(NULLIF({v}, '') IS NOT NULL AND lower({v}) NOT IN {_in(('nan', *MISSING_WORDS))} "
                            f"AND {e} IS NULL)")
        if t == "VARCHAR":
            # a missing value written as a word (an export's NULL, a spreadsheet's N/A) is missing,
            # as an empty field is: it was "does not convert", an error no run got past. A ',' only
            # between groups of three digits groups thousands (1,234.50, as a US export writes it),
            # as a '.' does with a decimal comma: it did not convert, and the hint to set
            # `decimal: ','` then left every other amount unread
            v = f"trim({c})"
            e = (f"(CASE WHEN NOT contains({v}, ',') THEN TRY_CAST(NULLIF({v}, '') AS DOUBLE) "
                 f"WHEN regexp_matches({v}, '{THOUSANDS_COMMA}') THEN TRY_CAST(replace({v}, ',', '') AS DOUBLE) END)")
            return Typed(_not_nan(e), f"(NULLIF(trim({c}), '') IS NOT NULL AND {e} IS NULL "
                                      f"AND lower(trim({c})) NOT IN {_in(MISSING_WORDS)})")
        return None
    if column.type == "bool":
        if t == "BOOLEAN":
            return Typed(c, "FALSE")
        if t == "VARCHAR" or t in INTEGER_TYPES:
            v = f"lower(trim(CAST({c} AS VARCHAR)))"
            e = f"CASE WHEN {v} IN {_in(_TRUE)} THEN TRUE WHEN {v} IN {_in(_FALSE)} THEN FALSE END"
            return Typed(e, f"(NULLIF({v}, '') IS NOT NULL AND ({e}) IS NULL)")
        return None
    raise ValueError(f"unknown logical type {column.type!r}")


#: A missing number written as a word, in lower case: read as missing, not as a value that does not convert
MISSING_WORDS = ("null", "none", "n/a", "na", "#n/a", "-")

#: ``timestamp_format`` values for numbers since 1970-01-01 UTC, each with its microseconds per unit
EPOCH_UNITS = {"epoch_s": 1_000_000, "epoch_ms": 1_000, "epoch_us": 1}
# The instants an epoch number may stand for, in microseconds: 1900-01-01 to 3000-01-01 UTC
_EPOCH_LOW, _EPOCH_HIGH = -2_208_988_800 * 10**6, 32_503_680_000 * 10**6


def forms_literal(forms: tuple[str, ...]) -> str:
    """SQL: a list of strptime forms, as ``try_strptime`` takes them."""
    return "[" + ", ".join(map(literal, forms)) + "]"


#: A number written with ',' between groups of three digits and a decimal point: 1,234 or 1,234.5
#: (after a first group starting with 1-9)
THOUSANDS_COMMA = r"^[+-]?[1-9][0-9]{0,2}(,[0-9]{3})+(\.[0-9]+)?$"

#: A number written with a decimal comma: 1234,5 or 1.234,5 (a '.' groups thousands after a first
#: group starting with 1-9)
DECIMAL_COMMA = r"^[+-]?([1-9][0-9]{0,2}(\.[0-9]{3})+|[0-9]+)(,[0-9]+)?$"


def _abbreviated(c: str) -> str:
    """SQL: a zone abbreviation after the time, which DuckDB reads though they are ambiguous: it
    takes BST for Bangladesh (+06), IST for India, CST with summer time. UTC and GMT are exact, as
    an offset (+01:00) or a zone name (Europe/London) is; AM and PM are no zone."""
    return (f"(regexp_matches(trim({c}), '[0-9]\\s*[A-Za-z]{{2,5}}$') AND "
            f"upper(regexp_extract(trim({c}), '([A-Za-z]+)$', 1)) NOT IN ('UTC', 'GMT', 'AM', 'PM'))")


#: After a time of day (one- or two-digit hour), an offset no place has, which DuckDB reads as so
#: many hours and minutes, shifting the time by days: beyond +14:00 or -12:00, minutes 60-99, or
#: seconds. One pattern, one test per value.
_IMPOSSIBLE_OFFSET = (r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*"
                      r"(\+(1[5-9]|[2-9][0-9]|14:?(0[1-9]|[1-5][0-9]))|-(1[3-9]|[2-9][0-9]|12:?(0[1-9]|[1-5][0-9]))"
                      r"|[+-][0-9]{2}:?[6-9][0-9]|[+-][0-9]{2}:?[0-9]{2}:?[0-9]{2})[0-9:]*$")


def iso_timestamptz(v: str) -> str:
    """SQL: ISO-8601 text ``v`` as a TIMESTAMPTZ, or NULL. Also with a space before the offset, as
    Shopify's exports write it (``2025-10-20 22:14:56 +0200``), which DuckDB's cast does not read;
    the second cast runs only for the values the first could not read."""
    return (f"coalesce(TRY_CAST({v} AS TIMESTAMPTZ), "
            f"TRY_CAST(regexp_replace({v}, '([0-9]) +([+-][0-9]{{2}}(:?[0-9]{{2}})?)$', '\\1\\2') AS TIMESTAMPTZ))")


def _impossible_offset(c: str) -> str:
    return f"regexp_matches(trim({c}), '{_IMPOSSIBLE_OFFSET}')"


def _not_nan(e: str) -> str:
    return f"(CASE WHEN isfinite({e}) OR isinf({e}) THEN {e} END)"


def blank(column: str) -> str:
    """SQL predicate: the raw value is null, empty or only white space (what ``trim`` removes).

    A value starting with a printable ASCII character other than space cannot be blank, and the
    CASE only trims the other rows: trimming every id of a 50M-event log cost 2 s of a 3 s scan.
    """
    v = f"CAST({ident(column)} AS VARCHAR)"
    return f"(CASE WHEN {v} IS NULL THEN TRUE WHEN {v} >= '!' AND {v} < chr(127) THEN FALSE ELSE trim({v}) = '' END)"


def expected_types(column: Column) -> str:
    return {
        "string": "text (or integer ids)",
        "timestamp": "timestamps, dates or ISO-8601 text",
        "double": "numbers",
        "bool": "booleans (true/false, yes/no, 1/0)",
    }[column.type]
