"""Segments: governed rules over features, scores and bands, compiled to one SQL query.

The query runs unchanged (but for quoting and one hash function) on DuckDB and on Spark SQL, so
both engines produce the same membership. Per segment, in dependency order:

1. candidates: the rows of ``scored`` where the segment's ``where`` holds (SQL three-valued
   logic: a rule that evaluates to NULL does not select the row);
2. minus the members of every segment it ``exclude``\\ s and of every ``suppress_always``
   segment (suppressions themselves are not suppressed);
3. holdout: ``md5(salt|segment|customer_id)`` read as a number in [0, 1) below the segment's
   holdout fraction (``holdout_key`` in place of the name, when set: a renamed segment keeps its
   holdout). The same customer lands on the same side in every run while the salt holds;
4. sendable: not a suppression segment, not in the holdout, and ``email_consent`` true as of
   the run. A customer without consent is never sendable, whatever the configuration says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Literal

from features.normalize import literal
from pipeline.config import ConfigError, ConfigIssue, FeaturesConfig, SegmentDef, SegmentsConfig
from pipeline.rules import Kind, Rule, RuleError, parse_rule

Dialect = Literal["duckdb", "spark"]
SEGMENTS_FILE = "configs/segments.yaml"
CONSENT_COLUMN = "email_consent"


@dataclass(frozen=True)
class CompiledSegment:
    definition: SegmentDef
    rule: Rule
    excluded: tuple[str, ...]  # own exclusions plus the always-applied suppressions

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def sendable_kind(self) -> bool:
        return self.definition.kind != "suppression"


def excluded_by(definition: dict, suppress: list[str]) -> list[str]:
    """The segments a definition (as stored with a run: ``SegmentDef.model_dump()``) excludes: its
    own ``exclude`` and, unless it is a suppression, the ``suppress_always`` ones."""
    exclude = list(definition["exclude"])
    return exclude + [s for s in suppress if definition["kind"] != "suppression" and s not in exclude]


def same_definition(a: tuple[dict, list[str]], b: tuple[dict, list[str]]) -> bool:
    """Whether two (definition, suppress_always) select and hold out the same customers: the same
    where (up to spacing and keyword case), exclusions, holdout and kind."""
    from pipeline.rules import same_rule_text

    (da, sa), (db, sb) = a, b
    return (same_rule_text(da["where"], db["where"]) and set(excluded_by(da, sa)) == set(excluded_by(db, sb))
            and da["holdout"] == db["holdout"] and da["kind"] == db["kind"]
            and (da.get("holdout_key") or da["name"]) == (db.get("holdout_key") or db["name"]))


def definition_changes(now: dict, before: dict) -> dict[str, str]:
    """How the segments of ``now`` differ from ``before`` (segments configs as a run stores them:
    ``segments`` and ``suppress_always``): ``"new"`` for a segment ``before`` lacks, ``"redefined"``
    for one that selects or holds out differently (:func:`same_definition`), ``"removed"`` for one
    of ``before`` that ``now`` lacks (its members all exited); the same ones are left out."""
    old = {d["name"]: d for d in before.get("segments", [])}
    out = {name: "removed" for name in old if name not in {d["name"] for d in now.get("segments", [])}}
    for d in now.get("segments", []):
        if d["name"] not in old:
            out[d["name"]] = "new"
        elif not same_definition((old[d["name"]], before.get("suppress_always", [])),
                                 (d, now.get("suppress_always", []))):
            out[d["name"]] = "redefined"
    return out


def no_segments_problem(project_dir: Path) -> str:
    """Why a project has no segment to score or check: the file missing, or defining none."""
    path = project_dir / "configs" / "segments.yaml"
    if not path.is_file():
        return (f"{path} is missing, so no segment is defined; copy the demo's (configs/segments.yaml in dynseg's "
                "repository) or write your own")
    return f"{path} defines no segments; add at least one under `segments:`"


def compile_segments(cfg: SegmentsConfig, columns: dict[str, Kind], only: list[str] | None = None,
                     values: Mapping[str, Collection[str]] | None = None,
                     features: FeaturesConfig | None = None, file: str = SEGMENTS_FILE) -> list[CompiledSegment]:
    """Parse every rule against the run's columns; raise :class:`ConfigError` listing every
    problem (file, key, token). Returned in dependency order: excluded segments first.
    ``file``: the file the segment list came from (``configs/local/segments.yaml`` replaces it whole).
    ``values``: the levels of each ``<target>_band`` column (a rule naming another is refused).
    ``features``: the windows and window roles the features are built with (default: the defaults),
    to tell a feature this data lacks from a typo."""
    issues: list[ConfigIssue] = []
    compiled: dict[str, CompiledSegment] = {}
    absent = partial(_absent_feature, features=features or FeaturesConfig())
    names = {s.name for s in cfg.segments}

    def why(name: str) -> str | None:
        # a feature this data lacks first: the demo's `unsubscribed` segment reads the feature of its
        # own name, and in a log without unsubscribe events was told to exclude itself
        lacking = absent(name)
        if lacking is not None:
            return lacking
        if name in names:  # where: recent_buyers
            return (f"'{name}' is a segment, not a column: a rule reads features, scores and bands; to leave its "
                    f"members out, `exclude: [{name}]`, or repeat its rule")
        return None

    for i, s in enumerate(cfg.segments):
        try:
            rule = parse_rule(s.where, columns, context=f"segment {s.name!r} where", values=values,
                              why_unknown=why)
        except RuleError as e:
            issues.append(ConfigIssue(file, f"segments[{i}].where", str(e)))
            continue
        compiled[s.name] = CompiledSegment(s, rule, tuple(excluded_by(s.model_dump(), cfg.suppress_always)))
    if issues:
        raise ConfigError(issues)
    order = _dependency_order(compiled)
    if only:
        unknown = [n for n in only if n not in compiled]
        if unknown:
            raise ConfigError([ConfigIssue(file, "segments", f"no segment named {unknown}; "
                                           f"defined: {sorted(compiled)}")])
    return order


def _absent_feature(name: str, features: FeaturesConfig) -> str | None:
    """Why a rule's unknown column is unknown when it is exactly a feature of the catalog as
    configured: the data lacks what that feature needs (a shop without bounce events has no
    ``bounced``, one without profiles no ``days_since_signup``), not a typo, so this is said
    instead of look-alike names. None for a name of a window that is not configured (``spend_9d``
    is a typo of ``spend_90d``) or of no role (``n_clicks_30d``)."""
    from features.contract import ROLES
    from features.customer_features import describe_column

    scored = re.fullmatch(r"(purchase|churn)_(score|score_100|band)", name)
    if scored:  # (the run's columns hold every target it scores: this one it does not)
        return (f"'{name}' is a column of the {scored[1]} model's scores, and this run does not score {scored[1]}: it is "
                f"not among `targets` in configs/scoring.yaml. Add it there (with a {scored[1]} champion), or remove "
                "the condition.")
    found = describe_column(name)
    if found is None:
        return None
    m = re.fullmatch(r"(?:spend|n_categories|n_(?P<role>[a-z_]+))_(?P<w>[0-9]+)d", name)
    if m:
        role, window = m["role"], int(m["w"])
        if window not in features.windows_days or (role is not None and role not in ROLES):
            return None
        if role is not None and role not in features.window_roles:
            return (f"'{name}' would count {role} events over {window} days, but {role} is not among the window "
                    f"roles ({', '.join(features.window_roles)}; `window_roles` in configs/features.yaml): add it "
                    "there, or remove the condition.")
    return (f"'{name}' is a feature ({found[0]}, features/customer_features.md) that this data does not have: no "
            "event of the role it needs before the cutoff (configs/roles.yaml), or no such profile field. Remove "
            "the condition or the segment (and then its name from suppress_always and from other segments' "
            "exclude), or map those events.")


def _dependency_order(compiled: dict[str, CompiledSegment]) -> list[CompiledSegment]:
    done: dict[str, CompiledSegment] = {}

    def visit(name: str) -> None:
        if name in done:
            return
        for other in compiled[name].excluded:
            visit(other)
        done[name] = compiled[name]

    for name in compiled:  # cycles were refused by the config loader
        visit(name)
    return list(done.values())


def quote(name: str, dialect: Dialect) -> str:
    return f"`{name}`" if dialect == "spark" else f'"{name}"'


def holdout_value_sql(salt: str, segment: str, customer: str, dialect: Dialect) -> str:
    """``md5(salt|segment|customer)``'s first 32 bits as a number in [0, 1)."""
    digest = f"substr(md5(concat({literal(salt)}, '|', {literal(segment)}, '|', {customer})), 1, 8)"
    as_int = (f"CAST(conv({digest}, 16, 10) AS BIGINT)" if dialect == "spark"
              else f"CAST(('0x' || {digest}) AS UBIGINT)")
    return f"({as_int} / 4294967296.0)"


def holdout_value(salt: str, segment: str, customer_id: str) -> float:
    """The same number in Python (for tests and audits)."""
    import hashlib

    digest = hashlib.md5(f"{salt}|{segment}|{customer_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 4294967296.0


def membership_sql(segments: list[CompiledSegment], salt: str, carry: list[str], has_consent: bool,
                   table: str = "scored", dialect: Dialect = "duckdb") -> str:
    """One query: ``segment, kind, customer_id, holdout, consented, sendable`` plus the ``carry`` columns of
    ``table`` for every member of every segment."""
    q = lambda n: quote(n, dialect)  # noqa: E731
    ctes = _member_ctes(segments, table, dialect)
    consent = f"coalesce(t.{q(CONSENT_COLUMN)}, false)" if has_consent else "false"
    parts = []
    for s in segments:
        d = s.definition
        held = (f"{holdout_value_sql(salt, d.holdout_key or d.name, 't.customer_id', dialect)} < {d.holdout!r}"
                if d.holdout > 0 else "false")
        cols = "".join(f", t.{q(c)}" for c in carry)
        sendable = f"(NOT ({held})) AND {consent}" if s.sendable_kind else "false"
        parts.append(
            f"SELECT {literal(d.name)} AS segment, {literal(d.kind)} AS kind, t.customer_id, "
            f"{held} AS holdout, {consent} AS consented, {sendable} AS sendable{cols} "
            f"FROM {table} t JOIN {q('seg_' + d.name)} m ON m.customer_id = t.customer_id"
        )
    if not parts:
        raise ValueError("configs/segments.yaml defines no segments; add at least one under `segments:`")
    return "WITH " + ", ".join(ctes) + "\n" + "\nUNION ALL\n".join(parts)


def _member_ctes(segments: list[CompiledSegment], table: str, dialect: Dialect) -> list[str]:
    """``seg_<name>``: each segment's members, its rule minus the members of the segments it excludes."""
    q = lambda n: quote(n, dialect)  # noqa: E731
    ctes = []
    for s in segments:
        anti = "".join(f" AND NOT EXISTS (SELECT 1 FROM {q('seg_' + o)} x WHERE x.customer_id = t.customer_id)"
                       for o in s.excluded)
        ctes.append(f"{q('seg_' + s.name)} AS (SELECT t.customer_id FROM {table} t WHERE ({s.rule.sql(dialect)}){anti})")
    return ctes


def exclusions_sql(segments: list[CompiledSegment], table: str = "scored", dialect: Dialect = "duckdb") -> str | None:
    """One query: ``segment, customer_id, excluded_by`` for every customer a segment's rule selects
    but a segment it excludes (its own ``exclude``, ``suppress_always``) takes away, ``excluded_by``
    naming those segments (", " between them, in the definition's order). Kept with a run, so that
    an exit can say why: excluded, or no longer matching the rule. None when no segment excludes."""
    q = lambda n: quote(n, dialect)  # noqa: E731
    parts = []
    for s in segments:
        if not s.excluded:
            continue
        joins = "".join(f" LEFT JOIN {q('seg_' + o)} x{i} ON x{i}.customer_id = t.customer_id"
                        for i, o in enumerate(s.excluded))
        named = ", ".join(f"CASE WHEN x{i}.customer_id IS NOT NULL THEN {literal(o)} END" for i, o in enumerate(s.excluded))
        taken = " OR ".join(f"x{i}.customer_id IS NOT NULL" for i in range(len(s.excluded)))
        # the rule on its own rows first: a rule may name customer_id, which the joins would make ambiguous
        parts.append(f"SELECT {literal(s.name)} AS segment, t.customer_id, concat_ws(', ', {named}) AS excluded_by "
                     f"FROM (SELECT customer_id FROM {table} WHERE ({s.rule.sql(dialect)})) t{joins} WHERE ({taken})")
    if not parts:
        return None
    return "WITH " + ", ".join(_member_ctes(segments, table, dialect)) + "\n" + "\nUNION ALL\n".join(parts)


def coverage_sql(segments: list[CompiledSegment], table: str = "scored", dialect: Dialect = "duckdb") -> str:
    """Per segment, the share of the scored customers for whom every column its rule reads is
    known (not NULL): a segment cannot select customers its inputs are missing for."""
    q = lambda n: quote(n, dialect)  # noqa: E731
    parts = []
    for s in segments:
        cols = sorted(s.rule.columns)
        known = " AND ".join(f"{q(c)} IS NOT NULL" for c in cols) or "true"
        # avg of integers is a double on both engines; Spark's avg of 1.0/0.0 (decimals) keeps only 5 places
        parts.append(f"SELECT {literal(s.name)} AS segment, avg(CASE WHEN {known} THEN 1 ELSE 0 END) AS coverage "
                     f"FROM {table}")
    return "\nUNION ALL\n".join(parts)
