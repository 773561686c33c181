"""Segment ``where`` rules: a small, safe filter language over customer columns.

A rule is user input from YAML, e.g. ``churn_band = 'high' AND days_since_last_open <= 90 AND NOT
unsubscribed``. It is parsed by our own tokenizer and recursive-descent parser, checked against the
table's columns and their kinds, and re-emitted as SQL from the parse tree, so the user's text never
reaches the SQL engine and nothing outside this grammar can be expressed:

    expr      := and_expr (OR and_expr)*
    and_expr  := not_expr (AND not_expr)*
    not_expr  := NOT not_expr | primary
    primary   := '(' expr ')' | predicate
    predicate := operand (= | != | <> | < | <= | > | >=) operand
               | operand [NOT] IN '(' literal (',' literal)* ')'
               | operand [NOT] BETWEEN operand AND operand
               | operand IS [NOT] NULL
               | column                      -- only a yes/no (boolean) column
    operand   := column | literal
    literal   := number (12, -1.5, 1e3) | 'text' ('' inside for a quote) | TRUE | FALSE

A date column compares with a date in quotes: ``last_order_at >= '2024-01-31'`` (or '2024-01-31 08:00').

Keywords are case-insensitive; column names are exact. Everything else (functions, arithmetic,
``||``, ``;``, comments, double-quoted names, subqueries, ...) is refused with a ``RuleError`` that
names the context, the offending token, its 1-based position and what was expected.

NULLs follow SQL's three-valued logic, and a customer is a member only where the rule is TRUE. A
comparison with a missing value is unknown, and so is its negation: ``x > 5`` and ``NOT (x > 5)``
both leave out customers whose ``x`` is NULL (as does ``x NOT IN (...)``). Say so explicitly when
missing values should be included, e.g. ``x <= 5 OR x IS NULL``. (DuckDB reads a pandas NaN as NULL;
Spark keeps NaN as a number above every other, so Spark tables should hold NULL, not NaN.)
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Collection, Literal, Mapping, NoReturn, Union

if TYPE_CHECKING:
    import pandas

Kind = Literal["number", "text", "bool", "timestamp"]
Dialect = Literal["duckdb", "spark"]

ALLOWED = (
    "Allowed: column/literal comparisons (= != <> < <= > >=), AND, OR, NOT, IN (...), "
    "BETWEEN ... AND ..., IS [NOT] NULL."
)
_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "IS", "NULL", "TRUE", "FALSE"})
_COMPARATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_MAX_DEPTH = 50

_KINDS = ("number", "text", "bool", "timestamp")
UNKNOWN = "unknown"  # the kind the parser gives a column the table lacks, to read on past it
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)?")
_KIND_NAME = {"number": "number", "text": "text", "bool": "yes/no", "timestamp": "date"}
_EXPECT_VALUE = {
    "number": "a number without quotes, e.g. 5 or -1.5",
    "text": "text in single quotes, e.g. 'high'",
    "bool": "TRUE or FALSE (or the yes/no column on its own)",
    "timestamp": "a date in single quotes, e.g. '2024-01-31' or '2024-01-31 08:00:00'",
}


class RuleError(ValueError):
    """A rule outside the allowed grammar, or not matching the table's columns. ``problems`` holds
    each problem found (unknown columns and mismatched kinds are all reported, up to the first
    problem of grammar, after which the rule cannot be read further)."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()):
        super().__init__(message)
        self.problems = problems or (message,)


# ---------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Token:
    kind: str  # ident keyword number string op lparen rparen comma minus arith end
    text: str  # as written (keywords upper-cased)
    pos: int  # 1-based
    value: object = None  # number or unescaped text


def _tokenize(text: str, fail: Callable[[str, str, int, str | None], NoReturn]) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c, pos = text[i], i + 1
        two = text[i : i + 2]
        if c.isspace():
            i += 1
        elif ident := _IDENT.match(text, i):
            word = ident.group()
            if word.upper() in _KEYWORDS:
                tokens.append(_Token("keyword", word.upper(), pos))
            else:
                tokens.append(_Token("ident", word, pos))
            i += len(word)
        elif c.isdigit() or (c == "." and text[i + 1 : i + 2].isdigit()):
            m = _NUMBER.match(text, i)
            if m is None:  # a non-ASCII digit
                fail("unexpected character", c, pos, None)
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                bad = re.match(r"[\w.]+", text[i:]).group()
                fail("not a valid number", bad, pos, "a number such as 12, -1.5 or 1e3")
            word = m.group()
            value: float | int = float(word) if any(ch in word for ch in ".eE") else int(word)
            if isinstance(value, float) and not math.isfinite(value):
                fail("number out of range", word, pos, "a smaller number")
            tokens.append(_Token("number", word, pos, value))
            i = end
        elif c == "'":
            j, chars = i + 1, []
            while True:
                if j >= n:
                    shown = text[i : i + 20] + ("..." if n - i > 20 else "")
                    fail("unterminated text", shown, pos, "a closing quote ' (write '' for a quote inside text)")
                if text[j] == "'":
                    if text[j + 1 : j + 2] == "'":
                        chars.append("'")
                        j += 2
                        continue
                    break
                chars.append(text[j])
                j += 1
            tokens.append(_Token("string", text[i : j + 1], pos, "".join(chars)))
            i = j + 1
        elif two == "--" or two == "/*":
            fail("comments are not allowed", two, pos, None)
        elif two == "||":
            fail("text concatenation is not allowed", two, pos, None)
        elif two == "==":
            fail("'==' is not a comparison", two, pos, "= for equality")
        elif any(text.startswith(op, i) for op in _COMPARATORS):
            op = next(op for op in _COMPARATORS if text.startswith(op, i))
            tokens.append(_Token("op", op, pos))
            i += len(op)
        elif c == ";":
            fail("statement separators are not allowed", c, pos, None)
        elif c == '"':
            close = text.find('"', i + 1)
            shown = text[i : close + 1] if close > 0 else c
            fail("double-quoted names are not allowed", shown, pos,
                 "a bare column name (a profile column named with spaces or symbols, such as \"Country Code\", "
                 "gets one under `columns:` in configs/catalog.yaml: country_code: \"Country Code\"), or text in single "
                 "quotes")
        elif c in "(),-+*/%":
            kind = {"(": "lparen", ")": "rparen", ",": "comma", "-": "minus"}.get(c, "arith")
            tokens.append(_Token(kind, c, pos))
            i += 1
        else:
            fail("unexpected character", c, pos, None)
    tokens.append(_Token("end", "", n + 1))
    return tokens


def same_rule_text(a: str, b: str) -> bool:
    """Whether two rules read the same token for token: spacing, line breaks and the case of
    keywords do not count (``purchase_band='high' and x>1`` equals ``purchase_band = 'high' AND x > 1``).
    A rule that does not tokenize compares as written."""
    def fail(*_):
        raise RuleError("not a rule")

    def tokens(text: str):
        return [(t.kind, t.text if t.kind != "number" else t.value, t.value if t.kind == "string" else None)
                for t in _tokenize(text, fail)]

    try:
        return tokens(a) == tokens(b)
    except RuleError:
        return a == b


# ---------------------------------------------------------------- tree


@dataclass(frozen=True)
class _Column:
    name: str
    kind: Kind


@dataclass(frozen=True)
class _Value:
    value: float | int | str | bool
    kind: Kind


_Operand = Union[_Column, _Value]


@dataclass(frozen=True)
class _Compare:
    op: str
    left: _Operand
    right: _Operand


@dataclass(frozen=True)
class _In:
    operand: _Operand
    values: tuple[_Value, ...]
    negated: bool


@dataclass(frozen=True)
class _Between:
    operand: _Operand
    low: _Operand
    high: _Operand
    negated: bool


@dataclass(frozen=True)
class _IsNull:
    operand: _Operand
    negated: bool


@dataclass(frozen=True)
class _Flag:
    column: _Column


@dataclass(frozen=True)
class _Not:
    expr: _Node


@dataclass(frozen=True)
class _Junction:
    op: Literal["AND", "OR"]
    items: tuple[_Node, ...]


_Node = Union[_Compare, _In, _Between, _IsNull, _Flag, _Not, _Junction]


# ---------------------------------------------------------------- parser


class _Parser:
    def __init__(self, text: str, columns: Mapping[str, Kind], context: str,
                 values: Mapping[str, Collection[str]] | None = None,
                 why_unknown: Callable[[str], str | None] | None = None):
        self.columns = columns
        self.why_unknown = why_unknown
        self.values = values or {}
        self.context = context
        self.used: set[str] = set()
        self.problems: list[str] = []  # found so far; reading goes on after an unknown column or a kind mismatch
        self.grammar = False  # some problem calls for the summary of the allowed grammar
        self.depth = 0
        self.tokens = _tokenize(text, self.fail)
        self.i = 0

    # -- errors

    def fail(self, problem: str, token: str, pos: int, expected: str | None) -> NoReturn:
        """Raise: '<context>: <problem>: '<token>' at position <pos>; expected <expected>. Allowed: ...',
        after the problems noted so far (the rule cannot be read past this one)."""
        self.note(problem, token, pos, expected)
        self.refuse()

    def note(self, problem: str, token: str, pos: int, expected: str | None) -> None:
        """Keep a problem that does not stop reading the rule (a kind mismatch)."""
        shown = "" if token == "" else f": {token}" if token.startswith("'") else f": '{token}'"
        tail = f"; expected {expected}" if expected else ""
        self.problems.append(f"{problem}{shown} at position {pos}{tail}.")
        self.grammar = True

    def refuse(self) -> NoReturn:
        """Raise every problem noted, in the order they appear, in one message."""
        message = f"{self.context}: " + " Also: ".join(self.problems)
        if self.grammar:
            message += f" {ALLOWED}"
        raise RuleError(message, tuple(self.problems))

    def unexpected(self, tok: _Token, expected: str) -> NoReturn:
        nxt = self.tokens[min(self.i + 1, len(self.tokens) - 1)]
        if tok.kind == "ident" and nxt.kind == "lparen":
            self.fail("function calls are not allowed", f"{tok.text}(", tok.pos, expected)
        if tok.kind in ("arith", "minus"):
            self.fail("arithmetic is not allowed", tok.text, tok.pos, expected)
        if tok.kind == "end":
            self.fail("the rule ends too early", "", tok.pos, expected)
        self.fail("unexpected token", tok.text, tok.pos, expected)

    # -- cursor

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_keyword(self, *words: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.text in words

    # -- grammar

    def rule(self) -> _Node:
        if self.peek().kind == "end":
            self.fail("empty rule", "", 1, "a condition such as churn_band = 'high'")
        node = self.expr()
        tok = self.peek()
        if tok.kind == "rparen":
            self.fail("unbalanced parentheses, no '(' to match", ")", tok.pos, "AND, OR or the end of the rule")
        if tok.kind != "end":
            self.unexpected(tok, "AND, OR or the end of the rule")
        return node

    def expr(self) -> _Node:
        items = [self.and_expr()]
        while self.at_keyword("OR"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else _Junction("OR", tuple(items))

    def and_expr(self) -> _Node:
        items = [self.not_expr()]
        while self.at_keyword("AND"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else _Junction("AND", tuple(items))

    def not_expr(self) -> _Node:
        if self.at_keyword("NOT"):
            tok = self.take()
            self.enter(tok)
            node = _Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            self.fail("the rule is nested too deeply", tok.text, tok.pos, f"at most {_MAX_DEPTH} levels of ( ) and NOT")

    def primary(self) -> _Node:
        tok = self.peek()
        if tok.kind != "lparen":
            return self.predicate()
        self.take()
        self.enter(tok)
        node = self.expr()
        self.depth -= 1
        close = self.peek()
        if close.kind == "end":
            self.fail("unbalanced parentheses", "(", tok.pos, "a ')' to close it")
        if close.kind != "rparen":
            self.unexpected(close, "')', AND or OR")
        self.take()
        return node

    def predicate(self) -> _Node:
        left, start = self.operand()
        tok = self.peek()
        if tok.kind == "op":
            self.take()
            right, right_tok = self.operand()
            self.check_pair(left, start, right, right_tok, tok)
            return _Compare(tok.text, left, right)
        negated = False
        if self.at_keyword("NOT"):
            self.take()
            negated = True
            if not self.at_keyword("IN", "BETWEEN"):
                self.unexpected(self.peek(), "IN or BETWEEN after NOT")
            tok = self.peek()
        if self.at_keyword("IN"):
            self.take()
            return self.in_list(left, start, tok, negated)
        if self.at_keyword("BETWEEN"):
            self.take()
            self.check_not_bool(left, tok)
            low, low_tok = self.operand()
            if not self.at_keyword("AND"):
                self.unexpected(self.peek(), "AND, as in x BETWEEN 1 AND 5")
            self.take()
            high, high_tok = self.operand()
            self.check_pair(left, start, low, low_tok, tok)
            self.check_pair(left, start, high, high_tok, tok)
            if (isinstance(low, _Value) and isinstance(high, _Value) and low.kind == high.kind == "number"
                    and low.value > high.value):  # x BETWEEN 180 AND 90 holds for no x
                self.note("BETWEEN's first bound is above its second, so no value lies between them",
                          low_tok.text, low_tok.pos, f"the smaller first, as in BETWEEN {high_tok.text} AND {low_tok.text}")
            return _Between(left, low, high, negated)
        if self.at_keyword("IS"):
            self.take()
            is_not = False
            if self.at_keyword("NOT"):
                self.take()
                is_not = True
            if not self.at_keyword("NULL"):
                self.unexpected(self.peek(), "NULL or NOT NULL after IS")
            self.take()
            return _IsNull(left, is_not)
        if tok.kind in ("end", "rparen") or (tok.kind == "keyword" and tok.text in ("AND", "OR")):
            if isinstance(left, _Column) and left.kind in ("bool", UNKNOWN):
                return _Flag(left)
            if isinstance(left, _Column):
                example = f"{left.name} = 'high'" if left.kind == "text" else f"{left.name} > 0"
                self.fail(
                    f"'{left.name}' is a {_KIND_NAME[left.kind]} column, not a yes/no column, so it cannot stand alone",
                    start.text, start.pos, f"a comparison such as {example}",
                )
            self.fail("a value on its own is not a condition", start.text, start.pos, "a comparison such as x = 1")
        self.unexpected(tok, "a comparison (= != <> < <= > >=), IN, BETWEEN or IS [NOT] NULL")

    def in_list(self, left: _Operand, left_tok: _Token, in_tok: _Token, negated: bool) -> _In:
        self.check_not_bool(left, in_tok)
        open_tok = self.peek()
        if open_tok.kind != "lparen":
            self.unexpected(open_tok, "'(' after IN, as in country IN ('DE', 'FR')")
        self.take()
        values: list[_Value] = []
        while True:
            value, tok = self.literal()
            self.check_pair(left, left_tok, value, tok, in_tok)
            values.append(value)
            sep = self.peek()
            if sep.kind == "comma":
                self.take()
                continue
            if sep.kind == "rparen":
                self.take()
                return _In(left, tuple(values), negated)
            if sep.kind == "end":
                self.fail("unbalanced parentheses", "(", open_tok.pos, "a ')' to close the IN list")
            self.unexpected(sep, "',' or ')' in the IN list")

    def literal(self) -> tuple[_Value, _Token]:
        tok = self.peek()
        if tok.kind in ("number", "string", "minus") or (tok.kind == "keyword" and tok.text in ("TRUE", "FALSE")):
            value, tok = self.operand()
            assert isinstance(value, _Value)
            return value, tok
        if tok.kind == "ident" and self.tokens[self.i + 1].kind != "lparen":
            self.fail("IN lists may only hold values", tok.text, tok.pos, "numbers, 'text', TRUE or FALSE")
        self.unexpected(tok, "a value: a number, 'text', TRUE or FALSE")

    def operand(self) -> tuple[_Operand, _Token]:
        """A column or a value, and its token (for error messages)."""
        tok = self.peek()
        expected = "a column or a value"
        if tok.kind == "ident":
            if self.tokens[self.i + 1].kind == "lparen":
                self.unexpected(tok, expected)
            self.take()
            return self.column(tok), tok
        if tok.kind == "number":
            self.take()
            return _Value(tok.value, "number"), tok  # type: ignore[arg-type]
        if tok.kind == "minus":
            num = self.tokens[self.i + 1]
            if num.kind != "number":
                self.unexpected(tok, "a number after '-', as in -1.5")
            self.i += 2
            return _Value(-num.value, "number"), _Token("number", "-" + num.text, tok.pos)  # type: ignore[operator]
        if tok.kind == "string":
            self.take()
            return _Value(tok.value, "text"), tok  # type: ignore[arg-type]
        if tok.kind == "keyword" and tok.text in ("TRUE", "FALSE"):
            self.take()
            return _Value(tok.text == "TRUE", "bool"), tok
        if tok.kind == "keyword" and tok.text == "NULL":
            problem = "NULL can only be tested with IS NULL or IS NOT NULL"
            self.fail(problem, tok.text, tok.pos, "x IS NULL instead of x = NULL")
        self.unexpected(tok, expected)

    def column(self, tok: _Token) -> _Column:
        name = tok.text
        if name not in self.columns:
            known = sorted(self.columns)
            same_case = [c for c in known if c.lower() == name.lower()]
            close = same_case or difflib.get_close_matches(name, known, n=3, cutoff=0.6)
            why = self.why_unknown(name) if self.why_unknown else None
            if why:  # the caller is sure: a real name this table lacks, which look-alikes would hide
                hint = why
            elif close:
                hint = "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
                unwritable = [c for c in close if not _IDENT.fullmatch(c)]
                if unwritable:  # a rule cannot name it: a profile column as an export spells it
                    c = unwritable[0]
                    plain = re.sub(r"[^A-Za-z0-9]+", "_", c).strip("_").lower() or "column"
                    plain = f"c_{plain}" if plain[0].isdigit() else plain  # a name starts with a letter
                    quoted = '"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"'  # YAML: '# ...' is a comment
                    hint += (f" A rule names columns bare, so '{c}' needs a plain name: under the customers source's "
                             f"`columns:` in configs/catalog.yaml, {plain}: {quoted}")
            elif known:
                shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
                hint = f"expected one of the columns: {shown}."
            else:
                hint = "expected a column, but the table has none."
            before = self.tokens[self.i - 2] if self.i >= 2 and self.tokens[self.i - 1] is tok else None
            if not why and before is not None and before.kind == "op" and before.text in _COMPARATORS:
                # country = DE: a bare word after a comparison reads as a column; a value is quoted
                hint += f" If {name} is a text value, quote it: '{name}'."
            self.problems.append(f"unknown column '{name}' at position {tok.pos}; {hint}")
            return _Column(name, UNKNOWN)  # read on: later problems are reported too
        self.used.add(name)
        return _Column(name, self.columns[name])

    # -- type checks

    def check_not_bool(self, left: _Operand, op_tok: _Token) -> None:
        """IN and BETWEEN are for numbers, text and dates, not yes/no values."""
        if left.kind == "bool":
            what = f"yes/no column '{left.name}'" if isinstance(left, _Column) else "TRUE/FALSE"
            expected = "= TRUE, = FALSE, or the column on its own"
            self.note(f"{what} cannot be used with {op_tok.text}", op_tok.text, op_tok.pos, expected)

    def check_pair(
        self, left: _Operand, left_tok: _Token, right: _Operand, right_tok: _Token, op_tok: _Token
    ) -> None:
        """Refuse comparing values of different kinds; booleans only with = != <>."""
        # name the literal when there is one, else the right-hand side
        col, other, other_tok = left, right, right_tok
        if isinstance(left, _Value) and isinstance(right, _Column):
            col, other, other_tok = right, left, left_tok
        if UNKNOWN in (col.kind, other.kind):  # an unknown column, already reported
            return
        if col.kind == other.kind:
            if (isinstance(col, _Column) and col.name.endswith("_score_100") and isinstance(other, _Value)
                    and isinstance(other.value, float) and 0 < other.value < 1):
                # the 0-100 score against a probability: >= 0.5 would select almost everyone
                target = col.name.removesuffix("_score_100")
                self.note(f"'{col.name}' is the score in whole points from 0 to 100; {other_tok.text} reads like a "
                          "probability", other_tok.text, other_tok.pos,
                          f"whole points for {col.name} ({round(other.value * 100)} for {other_tok.text}), or "
                          f"{target}_score for a probability")
            if (isinstance(col, _Column) and re.fullmatch(r"(purchase|churn)_score", col.name) and isinstance(other, _Value)
                    and isinstance(other.value, (int, float)) and not 0 <= other.value < 1):
                # a probability against whole points: > 50 selects no one, < 50 everyone, in silence
                self.note(f"'{col.name}' is a probability from 0 to 1; {other_tok.text} is outside it",
                          other_tok.text, other_tok.pos,
                          f"a probability for {col.name}"
                          + (f" ({other.value / 100:g} for {other_tok.text}), or {col.name}_100 for whole points"
                             if 1 <= other.value <= 100 else ""))
            elif (isinstance(col, _Column) and col.name.endswith("_score_100") and isinstance(other, _Value)
                    and isinstance(other.value, (int, float)) and not 0 <= other.value <= 100):
                self.note(f"'{col.name}' is the score in whole points from 0 to 100; {other_tok.text} is outside it",
                          other_tok.text, other_tok.pos, f"whole points from 0 to 100 for {col.name}")
            if col.kind == "bool" and op_tok.text not in ("=", "!=", "<>"):
                problem = "yes/no values can only be compared with = != <>"
                self.note(problem, op_tok.text, op_tok.pos, "= TRUE or = FALSE")
            known = self.values.get(col.name) if isinstance(col, _Column) else None
            if known and op_tok.text not in ("=", "!=", "<>", "IN"):
                # levels are names: 'high' sorts before 'medium', so >= 'medium' would drop 'high'
                self.note(f"'{col.name}' holds band names, which have no order", op_tok.text, op_tok.pos,
                          f"= or IN, as in {col.name} IN ('high', 'medium')")
            elif known and isinstance(other, _Value) and other.value not in known:
                # a band's levels are known: a misspelt one would only ever match no one
                self.note(f"'{col.name}' has no such value", other_tok.text, other_tok.pos,
                          "one of " + ", ".join(repr(v) for v in known))
            return
        if col.kind == "timestamp" and isinstance(other, _Value) and other.kind == "text":
            if not _is_date(str(other.value)):
                problem = f"not a date for date column '{col.name}'"
                self.note(problem, other_tok.text, other_tok.pos, _EXPECT_VALUE["timestamp"])
            return
        if isinstance(col, _Column) and isinstance(other, _Column):
            kind, other_kind = _KIND_NAME[col.kind], _KIND_NAME[other.kind]
            problem = f"cannot compare {kind} column '{col.name}' with {other_kind} column '{other.name}'"
            self.note(problem, other_tok.text, other_tok.pos, f"a {kind} column or {_EXPECT_VALUE[col.kind]}")
        elif isinstance(col, _Column):
            problem = f"cannot compare {_KIND_NAME[col.kind]} column '{col.name}' with {_describe(other)}"
            self.note(problem, other_tok.text, other_tok.pos, _EXPECT_VALUE[col.kind])
        else:
            problem = f"cannot compare {_describe(col)} with {_describe(other)}"
            self.note(problem, other_tok.text, other_tok.pos, "values of the same kind")


def _describe(value: _Operand) -> str:
    return {"number": "a number", "text": "text", "bool": "TRUE/FALSE", "timestamp": "a date"}[value.kind]


def _is_date(text: str) -> bool:
    if not _DATE.fullmatch(text):
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- SQL


def _quote_name(name: str, dialect: Dialect) -> str:
    # names come from the tokenizer: [A-Za-z_][A-Za-z0-9_]* only
    return f"`{name}`" if dialect == "spark" else f'"{name}"'


def _literal_sql(value: _Value, dialect: Dialect) -> str:
    v = value.value
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v) if abs(v) < 2**63 else repr(float(v))
    if isinstance(v, float):
        return repr(v)
    if dialect == "spark":  # Spark's lexer treats backslash as an escape and has no '' escape
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + v.replace("'", "''") + "'"


def _operand_sql(node: _Operand, dialect: Dialect) -> str:
    if isinstance(node, _Column):
        return _quote_name(node.name, dialect)
    return _literal_sql(node, dialect)


def _sql(node: _Node, dialect: Dialect) -> str:
    if isinstance(node, _Junction):
        return "(" + f" {node.op} ".join(_sql(item, dialect) for item in node.items) + ")"
    if isinstance(node, _Not):
        return f"(NOT {_sql(node.expr, dialect)})"
    if isinstance(node, _Flag):
        # not "(flag)": Spark reads "FROM t WHERE (flag)" as table t aliased WHERE with a column list
        return f"({_quote_name(node.column.name, dialect)} = TRUE)"
    if isinstance(node, _Compare):
        return f"({_operand_sql(node.left, dialect)} {node.op} {_operand_sql(node.right, dialect)})"
    neg = "NOT " if node.negated else ""
    subject = _operand_sql(node.operand, dialect)
    if isinstance(node, _In):
        values = ", ".join(_literal_sql(v, dialect) for v in node.values)
        return f"({subject} {neg}IN ({values}))"
    if isinstance(node, _Between):
        low, high = _operand_sql(node.low, dialect), _operand_sql(node.high, dialect)
        return f"({subject} {neg}BETWEEN {low} AND {high})"
    return f"({subject} IS {neg}NULL)"


# ---------------------------------------------------------------- API


@dataclass(frozen=True)
class Rule:
    """A parsed, checked rule. Build it with ``parse_rule``."""

    text: str
    columns: frozenset[str]
    _tree: _Node = field(repr=False, compare=False)

    def text_values(self) -> dict[str, set[str]]:
        """Column -> the text values the rule compares it with (``=``, ``!=``, ``<>``, ``IN``): what a
        run can check against the values the column holds (``country = 'de'`` where it holds 'DE')."""
        out: dict[str, set[str]] = {}

        def visit(node: _Node) -> None:
            if isinstance(node, _Compare) and node.op in ("=", "!=", "<>"):
                col, val = (node.left, node.right) if isinstance(node.left, _Column) else (node.right, node.left)
                if isinstance(col, _Column) and isinstance(val, _Value) and isinstance(val.value, str):
                    out.setdefault(col.name, set()).add(val.value)
            elif isinstance(node, _In) and isinstance(node.operand, _Column):
                out.setdefault(node.operand.name, set()).update(v.value for v in node.values if isinstance(v.value, str))
            elif isinstance(node, _Not):
                visit(node.expr)
            elif isinstance(node, _Junction):
                for item in node.items:
                    visit(item)

        visit(self._tree)
        return {c: v for c, v in out.items() if v}

    def sql(self, dialect: Dialect = "duckdb") -> str:
        """A parenthesised boolean SQL expression for ``WHERE``, rebuilt from the parse tree."""
        if dialect not in ("duckdb", "spark"):
            raise ValueError(f"dialect must be 'duckdb' or 'spark', not {dialect!r}")
        return _sql(self._tree, dialect)


def parse_rule(text: str, columns: Mapping[str, Kind], context: str = "where",
               values: Mapping[str, Collection[str]] | None = None,
               why_unknown: Callable[[str], str | None] | None = None) -> Rule:
    """Parse and check ``text`` against ``columns`` (name -> kind); raise ``RuleError`` if refused.
    ``values``: the only values some text columns can hold (a band's levels); comparing one with
    any other value is refused. ``why_unknown``: why a name is not a column, when the caller knows
    for sure (said instead of the columns that are, or the close ones); None where it does not."""
    if not isinstance(text, str):
        raise RuleError(f"{context}: expected the rule as text, found {type(text).__name__}. {ALLOWED}")
    bad = {name: kind for name, kind in columns.items() if kind not in _KINDS}
    if bad:
        raise ValueError(f"column kinds must be one of {_KINDS}; found {bad}")
    parser = _Parser(text, columns, context, values, why_unknown)
    tree = parser.rule()
    if parser.problems:
        parser.refuse()
    return Rule(text, frozenset(parser.used), tree)


def column_kinds(frame: pandas.DataFrame) -> dict[str, Kind]:
    """Column kinds from dtypes: bool -> bool, numeric -> number, datetime -> timestamp, else text."""
    import pandas as pd

    kinds: dict[str, Kind] = {}
    for name, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            dtype = dtype.categories.dtype
        if pd.api.types.is_bool_dtype(dtype):
            kinds[str(name)] = "bool"
        elif pd.api.types.is_numeric_dtype(dtype):
            kinds[str(name)] = "number"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kinds[str(name)] = "timestamp"
        else:
            kinds[str(name)] = "text"
    return kinds
