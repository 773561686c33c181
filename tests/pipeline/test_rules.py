"""Segment rules: parsed by our own parser, re-emitted as SQL, evaluated here by DuckDB."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipeline.rules import ALLOWED, Rule, RuleError, column_kinds, parse_rule

CONTEXT = "configs/segments.yaml: segments[3] 'likely_buyers' where"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "score": [10.0, 50.0, -1.5, np.nan, 70.0, 40.0],
            "n": pd.array([1, None, 3, 30, 0, -2], dtype="Int64"),
            "band": ["high", "low", None, "high", "mid", "o'hara"],
            "flag": pd.array([True, False, None, True, False, True], dtype="boolean"),
            "opted": [True, False, True, True, False, False],
            "ts": pd.to_datetime(
                ["2024-01-01", "2024-02-15", None, "2024-03-01", "2023-12-31", "2024-02-15 08:30"], format="ISO8601"
            ),
        }
    )


@pytest.fixture(scope="module")
def con(frame):
    con = duckdb.connect()
    con.register("t", frame)
    yield con
    con.close()


def members(con, frame: pd.DataFrame, text: str) -> list[int]:
    rule = parse_rule(text, column_kinds(frame))
    # fetchall, not fetchone: fetchone's behaviour differs across DuckDB versions
    rows = con.execute(f"SELECT id FROM t WHERE {rule.sql()} ORDER BY id").fetchall()
    return [row[0] for row in rows]


@pytest.mark.parametrize(
    "text, ids",
    [
        # each comparator; the NaN score (id 4) and NA n (id 2) are never members
        ("score = 50", [2]),
        ("score != 50", [1, 3, 5, 6]),
        ("score <> 50", [1, 3, 5, 6]),
        ("score < 40", [1, 3]),
        ("score <= 40", [1, 3, 6]),
        ("score > 40", [2, 5]),
        ("score >= 40", [2, 5, 6]),
        ("40 <= score", [2, 5, 6]),
        ("n > 0", [1, 3, 4]),
        ("score > n", [1, 5, 6]),
        # AND binds tighter than OR; parentheses override
        ("band = 'high' OR band = 'low' AND score > 60", [1, 4]),
        ("band = 'low' AND score > 60 OR band = 'high'", [1, 4]),
        ("(band = 'high' OR band = 'low') AND score > 20", [2]),
        ("((band = 'high') OR (band = 'low' AND (score > 20)))", [1, 2, 4]),
        # NOT, and NULLs under NOT (three-valued logic)
        ("NOT score > 40", [1, 3, 6]),
        ("NOT (score > 40)", [1, 3, 6]),
        ("NOT (score > 40) OR score IS NULL", [1, 3, 4, 6]),
        ("NOT band = 'high'", [2, 5, 6]),
        ("NOT flag", [2, 5]),
        ("NOT NOT flag", [1, 4, 6]),
        ("NOT (flag OR opted)", [2, 5]),
        # IN / NOT IN (a NULL is in neither)
        ("band IN ('high', 'mid')", [1, 4, 5]),
        ("band NOT IN ('high', 'mid')", [2, 6]),
        ("n IN (1, 3, -2)", [1, 3, 6]),
        ("n NOT IN (1, 3)", [4, 5, 6]),
        # BETWEEN is inclusive at both ends
        ("score BETWEEN 40 AND 70", [2, 5, 6]),
        ("score NOT BETWEEN 40 AND 70", [1, 3]),
        ("score BETWEEN -1.5 AND 10", [1, 3]),
        ("score BETWEEN n AND 45", [1, 6]),
        ("score BETWEEN 40 AND 70 AND flag", [6]),
        # IS [NOT] NULL, for every kind
        ("score IS NULL", [4]),
        ("score IS NOT NULL", [1, 2, 3, 5, 6]),
        ("n IS NULL", [2]),
        ("band IS NULL", [3]),
        ("flag IS NULL", [3]),
        ("ts IS NULL", [3]),
        # bare boolean columns (nullable and plain) and comparisons with TRUE/FALSE
        ("flag", [1, 4, 6]),
        ("opted", [1, 3, 4]),
        ("flag AND opted", [1, 4]),
        ("flag = TRUE", [1, 4, 6]),
        ("flag != TRUE", [2, 5]),
        ("flag = FALSE", [2, 5]),
        ("opted <> FALSE", [1, 3, 4]),
        ("flag = opted", [1, 2, 4, 5]),
        # text: quotes inside literals, ordering
        ("band = 'o''hara'", [6]),
        ("band > 'l'", [2, 5, 6]),
        ("band = 'x'' OR 1=1 --'", []),
        ("band = 'a\\'", []),
        # negative, float and exponent literals
        ("score = -1.5", [3]),
        ("score < -1", [3]),
        ("n = -2", [6]),
        ("score > 1e1", [2, 5, 6]),
        ("score >= .5e2", [2, 5]),
        ("score = 50.000", [2]),
        ("n > -3 AND n < -1", [6]),
        # case-insensitive keywords
        ("band in ('high') and not flag is null", [1, 4]),
        ("score Between 40 aNd 70 oR flag = true", [1, 2, 4, 5, 6]),
        ("score is not null and NOT (score > 40)", [1, 3, 6]),
        ("band not in ('high') Or flag = False", [2, 5, 6]),
        # dates: compared with ISO text
        ("ts >= '2024-02-15'", [2, 4, 6]),
        ("ts < '2024-01-01 00:00:01'", [1, 5]),
        ("ts BETWEEN '2024-01-01' AND '2024-02-15'", [1, 2]),
        # whitespace and newlines (YAML block scalars)
        ("  score > 40\n  AND\tflag = FALSE  ", [2, 5]),
    ],
)
def test_members(con, frame, text, ids):
    assert members(con, frame, text) == ids


def test_not_is_not_the_complement_when_values_are_missing(con, frame):
    above = members(con, frame, "score > 40")
    not_above = members(con, frame, "NOT (score > 40)")
    assert 4 not in above and 4 not in not_above  # score is NaN -> NULL -> in neither
    assert sorted(above + not_above + members(con, frame, "score IS NULL")) == [1, 2, 3, 4, 5, 6]


def test_sql_is_rebuilt_parenthesised_and_quoted(frame):
    rule = parse_rule("band = 'o''hara' and score > -1.5 OR not flag", column_kinds(frame))
    assert rule.sql() == "(((\"band\" = 'o''hara') AND (\"score\" > -1.5)) OR (NOT (\"flag\" = TRUE)))"
    assert rule.sql("spark") == "(((`band` = 'o\\'hara') AND (`score` > -1.5)) OR (NOT (`flag` = TRUE)))"
    assert rule.sql("duckdb") == rule.sql()


def test_spark_escapes_backslashes_and_quotes():
    rule = parse_rule("band IN ('a\\', 'it''s', 'x')", {"band": "text"})
    assert rule.sql() == "(\"band\" IN ('a\\', 'it''s', 'x'))"
    assert rule.sql("spark") == "(`band` IN ('a\\\\', 'it\\'s', 'x'))"


def test_sql_forms_of_every_predicate():
    kinds = {"x": "number", "b": "bool", "s": "text"}
    cases = {
        "x BETWEEN 1 AND 2.5": '("x" BETWEEN 1 AND 2.5)',
        "x not between -1 and 1e3": '("x" NOT BETWEEN -1 AND 1000.0)',
        "x IS NOT NULL": '("x" IS NOT NULL)',
        "s IS NULL": '("s" IS NULL)',
        "x NOT IN (1, 2)": '("x" NOT IN (1, 2))',
        "b = false": '("b" = FALSE)',
        "x <> 1": '("x" <> 1)',
        "(((b)))": '("b" = TRUE)',  # never "(b)": Spark reads "WHERE (b)" as an alias list
    }
    for text, sql in cases.items():
        assert parse_rule(text, kinds).sql() == sql, text


def test_rule_keeps_text_and_columns(frame):
    text = "score > 1 AND (score < 5 OR band IN ('a')) AND NOT flag"
    rule = parse_rule(text, column_kinds(frame))
    assert isinstance(rule, Rule)
    assert rule.text == text
    assert rule.columns == frozenset({"score", "band", "flag"})
    assert parse_rule("flag", column_kinds(frame)).columns == frozenset({"flag"})


def test_unknown_dialect_is_refused(frame):
    with pytest.raises(ValueError, match="dialect"):
        parse_rule("flag", column_kinds(frame)).sql("postgres")  # type: ignore[arg-type]


def test_column_kinds(frame):
    wider = frame.assign(
        obj=pd.Series(["a", None, 1, 2, 3, 4], dtype=object),
        cat=pd.Categorical(["a", "b", "a", "b", "a", "b"]),
        f64=pd.array([1.5, None, 2, 3, 4, 5], dtype="Float64"),
        i8=np.arange(6, dtype="int8"),
        tz=pd.to_datetime(frame["ts"]).dt.tz_localize("UTC"),
    )
    assert column_kinds(wider) == {
        "id": "number",
        "score": "number",
        "n": "number",
        "band": "text",
        "flag": "bool",
        "opted": "bool",
        "ts": "timestamp",
        "obj": "text",
        "cat": "text",
        "f64": "number",
        "i8": "number",
        "tz": "timestamp",
    }


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text, token, position, says",
    [
        ("band = 'x' AND lower(band) = 'x'", "'lower('", 16, "function calls are not allowed"),
        ("count(*) > 1", "'count('", 1, "function calls are not allowed"),
        ("score = 1; DROP TABLE t", "';'", 10, "statement separators are not allowed"),
        ("score = 1 -- and everyone else", "'--'", 11, "comments are not allowed"),
        ("score = 1 /* c */", "'/*'", 11, "comments are not allowed"),
        ("score = 1 UNION SELECT id FROM t", "'UNION'", 11, "expected AND, OR or the end of the rule"),
        ("n IN (SELECT n FROM t)", "'SELECT'", 7, "IN lists may only hold values"),
        ("score + 1 > 2", "'+'", 7, "arithmetic is not allowed"),
        ("score > n * 2", "'*'", 11, "arithmetic is not allowed"),
        ("score > 2 - 1", "'-'", 11, "arithmetic is not allowed"),
        ("score > -n", "'-'", 9, "arithmetic is not allowed"),
        ("band || 'x' = 'y'", "'||'", 6, "concatenation is not allowed"),
        ('"band" = \'x\'', "'\"band\"'", 1, "double-quoted names are not allowed"),
        ("band = 5", "'5'", 8, "cannot compare text column 'band' with a number"),
        ("score = '5'", "'5'", 9, "cannot compare number column 'score' with text"),
        ("score = -5 AND band = -5", "'-5'", 23, "expected text in single quotes"),
        ("score = band", "'band'", 9, "cannot compare number column 'score' with text column 'band'"),
        ("n IN (1, 'two')", "'two'", 10, "cannot compare number column 'n' with text"),
        ("flag = 1", "'1'", 8, "cannot compare yes/no column 'flag' with a number"),
        ("flag > TRUE", "'>'", 6, "yes/no values can only be compared with = != <>"),
        ("flag IN (TRUE)", "'IN'", 6, "yes/no column 'flag' cannot be used with IN"),
        ("score = TRUE", "'TRUE'", 9, "cannot compare number column 'score' with TRUE/FALSE"),
        ("ts > '31/01/2024'", "'31/01/2024'", 6, "not a date"),
        ("ts > 20240131", "'20240131'", 6, "cannot compare date column 'ts' with a number"),
        ("score AND flag", "'score'", 1, "not a yes/no column, so it cannot stand alone"),
        ("band", "'band'", 1, "expected a comparison such as band = 'high'"),
        ("5", "'5'", 1, "a value on its own is not a condition"),
        ("band = 'high", "'high", 8, "unterminated text"),
        ("(score > 1 AND flag", "'('", 1, "unbalanced parentheses"),
        ("band IN ('a', 'b'", "'('", 9, "unbalanced parentheses"),
        ("score > 1) OR flag", "')'", 10, "unbalanced parentheses"),
        ("score > 1 flag", "'flag'", 11, "expected AND, OR or the end of the rule"),
        ("score = NULL", "'NULL'", 9, "IS NULL"),
        ("score == 1", "'=='", 7, "expected = for equality"),
        ("score IS TRUE", "'TRUE'", 10, "expected NULL or NOT NULL after IS"),
        ("band NOT LIKE 'a%'", "'LIKE'", 10, "expected IN or BETWEEN after NOT"),
        ("score BETWEEN 1 OR 2", "'OR'", 17, "expected AND"),
        ("band IN ()", "')'", 10, "expected a value"),
        ("t.score > 1", "'.'", 2, "unexpected character"),
        ("score > 1 @ 2", "'@'", 11, "unexpected character"),
        ("score > 1abc", "'1abc'", 9, "not a valid number"),
        ("score > 1e999", "'1e999'", 9, "number out of range"),
        ("(" * 60 + "flag" + ")" * 60, "'('", 51, "nested too deeply"),
    ],
)
def test_refusals_name_context_token_and_position(frame, text, token, position, says):
    with pytest.raises(RuleError) as e:
        parse_rule(text, column_kinds(frame), CONTEXT)
    message = str(e.value)
    assert message.startswith(f"{CONTEXT}: ")
    assert f"{token} at position {position}" in message
    assert says in message
    assert message.endswith(ALLOWED)


def test_function_call_message_reads_well(frame):
    with pytest.raises(RuleError) as e:
        parse_rule("band = 'x' AND lower(band) = 'x'", column_kinds(frame), CONTEXT)
    assert str(e.value).startswith(f"{CONTEXT}: function calls are not allowed: 'lower(' at position 16; ")
    assert str(e.value).endswith(
        ". Allowed: column/literal comparisons (= != <> < <= > >=), AND, OR, NOT, IN (...), "
        "BETWEEN ... AND ..., IS [NOT] NULL."
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("scor > 1", "unknown column 'scor' at position 1; did you mean 'score'?"),
        ("score > 1 AND Band = 'x'", "unknown column 'Band' at position 15; did you mean 'band'?"),
        ("SELECT id FROM t", "unknown column 'SELECT' at position 1; expected one of the columns: band, flag,"),
        ("flag AND drop_table", "unknown column 'drop_table' at position 10; expected one of the columns:"),
        # a bare word after a comparison: a value written without quotes
        ("band = gold", "unknown column 'gold' at position 8; expected one of the columns: band, flag, id, n, opted, "
                        "score, ts. If gold is a text value, quote it: 'gold'."),
    ],
)
def test_unknown_columns_are_refused_with_suggestions(frame, text, message):
    with pytest.raises(RuleError) as e:
        parse_rule(text, column_kinds(frame), CONTEXT)
    assert str(e.value).startswith(f"{CONTEXT}: {message}")


def test_every_unknown_column_and_kind_mismatch_is_reported_at_once(frame):
    text = "scor > 1 AND band = 5 AND flagg AND n IN ('a', 2)"
    with pytest.raises(RuleError) as e:
        parse_rule(text, column_kinds(frame), CONTEXT)
    assert e.value.problems == (
        "unknown column 'scor' at position 1; did you mean 'score'?",
        "cannot compare text column 'band' with a number: '5' at position 21; expected text in single quotes, e.g. 'high'.",
        "unknown column 'flagg' at position 27; did you mean 'flag'?",
        "cannot compare number column 'n' with text: 'a' at position 43; expected a number without quotes, e.g. 5 or -1.5.",
    )
    assert str(e.value) == f"{CONTEXT}: " + " Also: ".join(e.value.problems) + f" {ALLOWED}"
    # a problem of grammar ends the reading: what came before it is still reported
    with pytest.raises(RuleError) as e:
        parse_rule("scor > 1 AND band = ", column_kinds(frame), CONTEXT)
    assert len(e.value.problems) == 2 and "the rule ends too early" in e.value.problems[1]


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_empty_rule_is_refused(frame, text):
    with pytest.raises(RuleError, match="empty rule at position 1; expected a condition") as e:
        parse_rule(text, column_kinds(frame), CONTEXT)
    assert str(e.value).startswith(CONTEXT)


@pytest.mark.parametrize("text", ["score >", "score > 1 AND", "NOT", "band IN ('a',", "score BETWEEN 1 AND"])
def test_rules_that_end_too_early_are_refused(frame, text):
    with pytest.raises(RuleError, match=f"the rule ends too early at position {len(text) + 1}; expected"):
        parse_rule(text, column_kinds(frame), CONTEXT)


def test_rule_error_is_a_value_error_and_default_context_is_where():
    with pytest.raises(ValueError, match=r"^where: unknown column 'x'"):
        parse_rule("x = 1", {"y": "number"})


def test_refused_text_never_reaches_duckdb(con, frame):
    """Everything that parses is rebuilt from the tree: injection attempts inside text stay text."""
    nasty = "x'); DROP TABLE t; --"
    rule = parse_rule("band = '" + nasty.replace("'", "''") + "'", column_kinds(frame))
    assert con.execute(f"SELECT id FROM t WHERE {rule.sql()}").fetchall() == []
    assert con.execute("SELECT count(*) FROM t").fetchall() == [(6,)]


def test_a_level_a_band_does_not_have_is_refused(frame):
    levels = {"band": ("high", "medium", "low")}  # highest first, as bands are listed
    for text, token in (("band = 'hihg'", "'hihg'"), ("band IN ('high', 'mid')", "'mid'")):
        with pytest.raises(RuleError) as e:
            parse_rule(text, column_kinds(frame), CONTEXT, values=levels)
        assert e.value.problems == (f"'band' has no such value: {token} at position {text.index(token) + 1}; "
                                    "expected one of 'high', 'medium', 'low'.",)
    assert parse_rule("band = 'high' OR band != 'low'", column_kinds(frame), CONTEXT, values=levels).columns == {"band"}
    for text, op in (("band >= 'medium'", ">="), ("band BETWEEN 'high' AND 'low'", "BETWEEN")):
        with pytest.raises(RuleError) as e:
            parse_rule(text, column_kinds(frame), CONTEXT, values=levels)
        assert e.value.problems[0].startswith(f"'band' holds band names, which have no order: '{op}'"), e.value.problems


def test_rules_that_cannot_mean_what_they_say_are_refused():
    kinds = {"recency_days": "number", "purchase_score_100": "number", "purchase_score": "number"}
    with pytest.raises(RuleError, match=r"BETWEEN's first bound is above its second, so no value lies between them: "
                                        r"'180' at position 22; expected the smaller first, as in BETWEEN 90 AND 180"):
        parse_rule("recency_days BETWEEN 180 AND 90", kinds)
    with pytest.raises(RuleError, match=r"'purchase_score_100' is the score in whole points from 0 to 100; 0.5 reads "
                                        r"like a probability.*expected whole points for purchase_score_100 \(50 for "
                                        r"0.5\), or purchase_score for a probability"):
        parse_rule("purchase_score_100 >= 0.5", kinds)
    # the mirror mistake: whole points against the probability selected no one (> 50) or everyone, in silence
    with pytest.raises(RuleError, match=r"'purchase_score' is a probability from 0 to 1; 50 is outside it: '50' at "
                                        r"position 18; expected a probability for purchase_score \(0.5 for 50\), or "
                                        r"purchase_score_100 for whole points"):
        parse_rule("purchase_score > 50", kinds)
    with pytest.raises(RuleError, match=r"'purchase_score' is a probability from 0 to 1; 1.5 is outside it"):
        parse_rule("purchase_score BETWEEN 0.2 AND 1.5", kinds)
    with pytest.raises(RuleError, match=r"'purchase_score_100' is the score in whole points from 0 to 100; 101 is outside"):
        parse_rule("purchase_score_100 >= 101", kinds)
    for fine in ("recency_days BETWEEN 90 AND 180", "recency_days BETWEEN 90 AND 90", "purchase_score_100 >= 50",
                 "purchase_score >= 0.5", "purchase_score_100 >= 1.5", "purchase_score > 0", "purchase_score_100 <= 100"):
        parse_rule(fine, kinds)


def test_a_column_no_rule_can_name_is_offered_a_plain_name():
    """A Shopify profile column, "Country Code", taken as a feature: `Country_Code` was offered
    "did you mean 'Country Code'?", and the quoted name was refused: no rule could name it."""
    kinds = {"Country Code": "text", "score": "number"}
    with pytest.raises(RuleError) as e:
        parse_rule("Country_Code = 'DE'", kinds, CONTEXT)
    assert ("did you mean 'Country Code'? A rule names columns bare, so 'Country Code' needs a plain name: under "
            "the customers source's `columns:` in configs/catalog.yaml, country_code: \"Country Code\"") in str(e.value)
    with pytest.raises(RuleError) as e:
        parse_rule('"Country Code" = \'DE\'', kinds, CONTEXT)
    assert "double-quoted names are not allowed" in str(e.value) and 'country_code: "Country Code"' in str(e.value)
    # a name offered is one a rule can write, and its YAML reads back as the column's name
    import yaml

    for column, typed, plain in (("2FA Enabled", "FA_Enabled", "c_2fa_enabled"), ("Order #", "Order_", "order")):
        with pytest.raises(RuleError) as e:
            parse_rule(f"{typed} = 1", {column: "number"}, CONTEXT)
        line = str(e.value).split("configs/catalog.yaml, ")[1]
        assert yaml.safe_load(line) == {plain: column}, line
        parse_rule(f"{plain} = 1", {plain: "number"})
    with pytest.raises(RuleError) as e:  # a name a rule can write gets no such advice
        parse_rule("scor > 1", kinds, CONTEXT)
    assert "plain name" not in str(e.value)


def test_a_rule_names_the_text_values_it_compares_each_column_with():
    kinds = {"country": "text", "plan": "text", "recency_days": "number", "purchase_band": "text"}
    rule = parse_rule("(country = 'de' OR plan IN ('gold', 'Silver')) AND NOT country <> 'FR' AND recency_days < 30 "
                      "AND 'x' = plan", kinds)
    assert rule.text_values() == {"country": {"de", "FR"}, "plan": {"gold", "Silver", "x"}}
    assert parse_rule("recency_days < 30", kinds).text_values() == {}
