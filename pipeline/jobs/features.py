"""Feature jobs: pick the engine, measure what the data offers, build features and training sets."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from features.asof import BadValue, as_of_label, as_of_text, cutoff_label, now_utc, parse_duration
from features.customer_features import (FALSE_WORDS, TRUE_WORDS, DataProfile, FeatureSpec, customer_features,
                                        is_catalog_column, reserved_name, utc)
from features.contract import plain
from features.normalize import DECIMAL_COMMA, forms_literal, ident, iso_timestamptz, literal
from features.engines import FeatureEngine
from features.engines.duckdb import sort_by_customer, to_frame
from features.freshness import NoEventsBefore, RolesStopped, StaleDataError, check_freshness, is_stale
from features.labels import LabelSpec
from features.training_set import SnapshotPlan, build_training_set, label_rates, plan_snapshots
from features.validation import PLACEHOLDER_IDS, Problem, placeholder_id_text, unknown_customers
from pipeline.config import Config, ConfigError, ConfigIssue
from pipeline.jobs.data import LoadedData, load_for_run, skipped_examples
from pipeline.workspace import Workspace, atomic_target, check_writable, not_the_projects_own, temp_sibling


@dataclass
class FeatureRun:
    """A built feature set. The DuckDB engine's result stays in Arrow (``table``) until something
    asks for ``frame``: writing Parquet and the CLI's summary need no pandas copy."""

    profile: DataProfile
    engine: str
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    table: pa.Table | None = None
    _frame: pd.DataFrame | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, profile: DataProfile, engine: str, warnings: list[str]) -> FeatureRun:
        """A run whose engine returned pandas (Spark)."""
        run = cls(profile, engine, warnings)
        run._frame = frame
        return run

    @property
    def frame(self) -> pd.DataFrame:
        """The features as pandas; converted from Arrow on first use (the Arrow table is then let go)."""
        if self._frame is None:
            self._frame, self.table = to_frame(self.table), None
        return self._frame

    def arrow(self) -> pa.Table:
        """The features as Arrow (converted from pandas for an engine that returned pandas)."""
        return self.table if self.table is not None else pa.Table.from_pandas(self._frame, preserve_index=False)

    def write(self, out: Path) -> Path:
        """Parquet (from Arrow as it is, when the result is Arrow) or CSV, by suffix, atomically."""
        if out.suffix.lower() == ".parquet" and self.table is not None:
            return write_arrow(self.table, out)
        return write_frame(self.frame, out)


#: What a Spark run is doing while its JVM starts (about 20 s on one machine, each command)
SPARK_START = "starting Spark and handing it the log (the JVM's start takes about 20 s)"


def open_engine(cfg: Config, data: LoadedData, name: str | None = None) -> FeatureEngine:
    """The one place that chooses and opens a feature engine."""
    name = name or cfg.settings.engine
    if name == "duckdb":
        from features.engines.duckdb import DuckDBEngine

        return DuckDBEngine(data.con)
    if name == "spark":
        from features.engines.spark import SparkEngine, export_canonical, spark_session

        root = staging_root(cfg)
        session = spark_session(cfg.settings.spark.master, spark_conf(cfg),  # first: no Java or pyspark is
                                where=f"spark.master in {cfg.origin('project.yaml', 'spark', 'master')}")
        # said before the log is exported. A folder of its own per run: two runs on one workspace never
        # read each other's export (Spark reads the files lazily, long after they are written). Removed
        # when the engine closes; one a killed run left is removed by the next (see temp_sibling).
        staging = temp_sibling(root / "spark-run")
        try:
            return SparkEngine(session, *export_canonical(data.con, staging), owned=staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    raise ValueError(f"feature engine {name!r} is not supported; expected 'duckdb' or 'spark'")


def spark_conf(cfg: Config) -> dict[str, str]:
    """``spark.conf`` of the config as Spark reads it: YAML's true and 8 as 'true' and '8'."""
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in cfg.settings.spark.conf.items()}


def staging_root(cfg: Config) -> Path:
    """Where a Spark run stages what it hands Spark and what Spark hands back: ``spark.staging_dir``
    (relative to the project folder), else the workspace's ``staging/``. Refused for a cluster's
    master without one: its executors, on other machines, would not find the workspace's files."""
    from features.engines.spark import is_local

    sp = cfg.settings.spark
    if sp.staging_dir is None:
        if not is_local(sp.master):
            raise ValueError(f"spark.master is {sp.master!r} (a cluster), and spark.staging_dir is not set "
                             f"({cfg.origin('project.yaml', 'spark', 'master')}): a Spark run hands the log to Spark, "
                             "and takes its results back, as Parquet files that every executor must read and write "
                             "under the same path. Set spark.staging_dir to such a folder (a shared mount), "
                             "or use master: local[N]")
        return Workspace(cfg.workspace).root / "staging"
    path = Path(sp.staging_dir).expanduser()
    path = path if path.is_absolute() else cfg.project_dir / path
    # a folder that is there already (a shared mount): made with mkdir -p, a typo (/mnt/shraed) or a
    # mount missing on the driver became a local folder the executors never see
    where = cfg.origin("project.yaml", "spark", "staging_dir")
    if path.is_file():
        raise ValueError(f"spark.staging_dir {path} ({where}) is a file; expected a folder that every Spark executor "
                         "reads and writes under the same path (a shared mount). Fix the path")
    if not path.is_dir():
        raise ValueError(f"spark.staging_dir {path} ({where}) does not exist; dynseg does not create it, since a "
                         "folder made here would be on this machine only: a typo, or a shared mount missing on this "
                         "machine. Fix the path, mount the share, or create the folder if it is meant to be here")
    return path


def data_profile(cfg: Config, data: LoadedData, before: datetime | None = None) -> DataProfile:
    """Which roles and profile fields the data has; fixed per run so snapshots share columns.

    ``before``: only what the data held before that instant, so that the columns of one cutoff's
    feature set (``features build``) do not depend on events after it: a role whose first event is
    at or after the cutoff gives no columns, as in a log without it; a training set given an as_of
    takes what the data held before it too. Other training sets and scoring runs take the whole log
    (their snapshots share columns, and a run has every column a model may use)."""
    con = data.con
    summary = data.report.role_summary(cfg.role_of)  # counted during validation, with each role's first time
    cut = utc(before) if before is not None else None
    roles = frozenset(r for r, (_, first, _) in summary.items() if cut is None or (first is not None and first < cut))
    if cut is None:
        has_signup, has_consent = con.execute(
            "SELECT count(signup_at) > 0, count(email_consent) > 0 AND count(consent_updated_at) > 0 FROM customers"
        ).fetchall()[0]
    else:  # what the features can take from the profile as of the cutoff: a signup, a decision made before it
        from features.load import has_consent_profiles

        # merged customers: every merged profile row's decision (a merged row keeps only the latest)
        decisions = "consent_profiles" if has_consent_profiles(con) else "customers"
        has_signup = con.execute("SELECT count(*) FILTER (signup_at < $t) > 0 FROM customers", {"t": cut}).fetchall()[0][0]
        has_consent = con.execute(f"SELECT count(*) FILTER (email_consent IS NOT NULL AND consent_updated_at < $t) > 0 "
                                  f"FROM {decisions}", {"t": cut}).fetchall()[0][0]
    categorical, boolean_text = _categorical(cfg, data, cut)
    has_category = "category" in data.report.typed.get("events", {})  # the column, whatever it holds
    return DataProfile(roles, bool(has_signup), bool(has_consent), categorical, boolean_text, has_category)


_BOOLEAN_WORDS = ", ".join(literal(w) for w in (*TRUE_WORDS, *FALSE_WORDS))  # a SQL list: a boolean in a CSV file


def _boolean_word(c: str) -> str:
    """SQL: the text column ``c``'s value is a boolean word, as DuckDB's CSV sniffer reads one."""
    return f"lower(trim({ident(c)})) IN ({_BOOLEAN_WORDS})"


#: text columns of the profiles that ``categorical_attributes: auto`` examines at most
AUTO_MAX_COLUMNS = 200


def _categorical(cfg: Config, data: LoadedData, cut: datetime | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The profile attributes taken as categorical features, and those of them that a CSV file
    holds as booleans (see :attr:`DataProfile.boolean_text`). ``cut``: `auto` counts the values of
    the customers known before it only (signed up, or an event, before it), so a customer who comes
    later cannot take a column out of the feature set as of it (by passing ``max_categories``)."""
    if "customers" not in data.report.sources:
        return (), ()
    contract = {"customer_id", "signup_at", "email_consent", "consent_updated_at"}
    types = data.report.sources["customers"].columns
    source = cfg.source_specs().get("customers")
    csv = source is not None and source.format == "csv"
    wanted = cfg.features.categorical_attributes
    if wanted != "auto":
        missing = [c for c in wanted if c not in types or c in contract]
        if missing:
            raise ValueError(
                f"configs/features.yaml: categorical_attributes names {missing}, which the customers source does "
                f"not have as attributes; found {sorted(set(types) - contract)}"
            )
        listed = _distinct_names(cfg, tuple(wanted))
        return listed, (_boolean_text(data, listed) if csv and listed else ())
    # A contract name in another case (Email_Consent) is no attribute: DuckDB's names ignore case, so
    # it would read the contract column (validation says to map it, when it holds that)
    text = [c for c, t in types.items() if c.lower() not in contract and t == "VARCHAR" and not personal(c)]
    if not text:
        return (), ()

    def only_typed_values(c: str) -> str:
        # A CSV file has no types: every column reads as text. A column whose every value is a
        # number, a boolean, a date or a time is what a typed file (Parquet, DuckDB) would hold
        # as one, and is left out as it would be there, so the feature set does not depend on the
        # file's form (and a cohort month or a last-seen date, which may lie after the cutoff,
        # is no category). As DuckDB's own CSV sniffer reads them: a number with a leading zero
        # (a zip code, 02134) and Y/N are text; true/false, t/f and yes/no are booleans.
        # The source's own forms (timestamp_format, decimal) count as typed values too: a last-seen
        # date written 28/11/2026 is no category any more than 2026-11-28 is.
        v = f"trim({ident(c)})"
        own = ""
        if source is not None and source.timestamp_forms:
            own += f" OR try_strptime({v}, {forms_literal(source.timestamp_forms)}) IS NOT NULL"
        if source is not None and source.decimal == ",":
            own += f" OR regexp_matches({v}, '{DECIMAL_COMMA}')"
        return (f"bool_and({ident(c)} IS NULL OR (TRY_CAST({v} AS DOUBLE) IS NOT NULL AND NOT "
                f"regexp_matches({v}, '^[+-]?0[0-9]')) OR {_boolean_word(c)} "
                f"OR {iso_timestamptz(v)} IS NOT NULL OR TRY_CAST({v} AS TIME) IS NOT NULL{own})")

    def chunked(select: Callable[[str], list[str]], tail: str, params: dict) -> list:
        # a read of the (merged) profiles per 50 columns: one query over 1,000 text columns took DuckDB
        # past any memory limit (18.8 GiB unlimited) for 199 customers
        got = []
        for i in range(0, len(text), 50):
            part = text[i:i + 50]
            row = data.con.execute("SELECT " + ", ".join(m for c in part for m in select(c)) + tail, params).fetchall()[0]
            width = len(row) // len(part)  # the measures of one column
            got += [row[j:j + width] for j in range(0, len(row), width)]
        return got

    def wide(taken: list[str]) -> None:
        # as features, so many attributes make a model of a profile export, not of behaviour
        if len(taken) > AUTO_MAX_COLUMNS:
            where = f"the customers source ({source.path})" if source is not None and source.path else "the customers source"
            raise ValueError(
                f"{where} has {len(taken):,} text columns that categorical_attributes: auto would take as features, more "
                f"than it takes ({AUTO_MAX_COLUMNS}); expected a profile table of attributes, found a wide export "
                f"(first: {', '.join(taken[:5])}, ...). List the attributes to use as features in configs/features.yaml, "
                "say `categorical_attributes: [plan, country]` (or [] for none)")

    # per column, its count of values and, from CSV, whether every value is typed (a number, a date)
    def measures(c: str) -> list[str]:
        return [f"count(DISTINCT {ident(c)})"] + ([only_typed_values(c)] if csv else [])
    # as of a cutoff, the values of its population (known_customers): signed up before it, or an
    # event before it; the event scan only when some profile may be known by its events alone
    known, limit = "", cfg.features.max_categories
    if cut is not None:
        known = " WHERE signup_at < $t"
        if data.con.execute("SELECT count(*) FILTER (signup_at IS NULL OR signup_at >= $t) > 0 FROM customers",
                            {"t": cut}).fetchall()[0][0]:
            # some profiles count only if their customer had an event before the cutoff: the counts
            # over every profile and over those signed up before it bound the population's; the
            # log is read only for a column they leave undecided (or a CSV file's typed values)
            if not csv:
                bounds = chunked(lambda c: [f"count(DISTINCT {ident(c)})",
                                            f"count(DISTINCT {ident(c)}) FILTER (WHERE signup_at < $t)"],
                                 " FROM customers", {"t": cut})
                upper, lower = [b[0] for b in bounds], [b[1] for b in bounds]
                taken = [c for c, hi, lo in zip(text, upper, lower) if 0 < lo and hi <= limit]
                if all((0 < lo and hi <= limit) or lo > limit or hi == 0 for hi, lo in zip(upper, lower)):
                    wide(taken)
                    return _distinct_names(cfg, tuple(taken)), ()
            known += " OR customer_id IN (SELECT customer_id FROM events WHERE ts < $t)"
    got = chunked(measures, " FROM customers" + known, {} if cut is None else {"t": cut})
    taken = [c for c, g in zip(text, got) if 0 < g[0] <= limit and not (csv and g[1])]
    wide(taken)
    return _distinct_names(cfg, tuple(taken)), ()  # auto takes no column of booleans: it is no text


#: Profile columns that identify or reach a person (a Shopify or Klaviyo export carries them): a
#: model that learns from a first name or an email address explains a score by it, and a few
#: hundred customers give such a column few enough values to pass max_categories. `auto` leaves
#: them out; listed by name, they are taken.
_PERSONAL = ("email", "emailaddress", "mail", "phone", "phonenumber", "mobile", "firstname", "lastname", "fullname",
             "name", "surname", "givenname", "middlename", "address", "address1", "address2", "street",
             "ipaddress", "ip", "birthday", "dateofbirth", "dob", "password", "token", "ssn")


def personal(column: str) -> bool:
    """Whether a profile column looks like a person's identity or contact (``first_name``,
    ``Email Address``, ``billing_phone``), which `auto` does not take as a feature."""
    name = plain(column)
    return name in _PERSONAL or name.endswith(("email", "phone", "firstname", "lastname", "address"))


def _boolean_text(data: LoadedData, attributes: tuple[str, ...]) -> tuple[str, ...]:
    """The listed attributes that a CSV file holds as booleans (every value true/false, t/f or
    yes/no, as DuckDB's CSV sniffer reads them): spelled ``true``/``false`` as a typed file's
    booleans are, so a model trained on one form of the profiles reads the other's values too
    (pandas writes ``True``; a Parquet boolean cast to text is ``true``)."""
    measures = [f"count({ident(c)}) > 0 AND bool_and({ident(c)} IS NULL OR {_boolean_word(c)})" for c in attributes]
    row = data.con.execute("SELECT " + ", ".join(measures) + " FROM customers").fetchall()[0]
    return tuple(c for c, is_boolean in zip(attributes, row) if is_boolean)


def _distinct_names(cfg: Config, attributes: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse a profile attribute named like a column of the feature set: it would replace that
    column (a text ``frequency`` where the purchase count belongs, an ``as_of`` of text)."""
    clash = {a: why for a in attributes if (why := reserved_name(a))}
    if clash:
        source = cfg.source_specs().get("customers")
        where = f"the customers source ({source.path})" if source is not None and source.path else "the customers source"
        said = "; ".join(f"{a!r} is named like {why}" + (" (DuckDB's names ignore case)" if a != a.lower() else "")
                         for a, why in clash.items())
        contract = [a for a in clash if a.lower() in ("signup_at", "email_consent", "consent_updated_at")]
        mapped = (f"If {contract[0]!r} holds the customer's {contract[0].lower()}, map it: `columns: "
                  f"{{{contract[0].lower()}: {contract[0]}}}` in configs/catalog.yaml. Otherwise rename"
                  if contract else "Rename")
        raise ValueError(
            f"{where}: {'profile attributes clash' if len(clash) > 1 else 'a profile attribute clashes'} with the feature set: {said}, which the "
            "attribute would replace or be replaced by; expected profile attributes with names of their own "
            f"(`dynseg features describe` lists the feature columns). {mapped} the column in the source (or map "
            "another name to it with `columns:` in configs/catalog.yaml), or list categorical_attributes in "
            "configs/features.yaml without it")
    return attributes


@dataclass(frozen=True)
class ProjectColumn:
    """One column a project's feature build makes (see :func:`project_columns`)."""

    name: str
    group: str
    meaning: str
    #: what the column needs beyond what every build has: roles (each of them) or source columns
    #: (``customers.signup_at``, ``events.category``)
    needs: tuple[str, ...]
    #: a model input (not a key, not in exclude_features)
    model_input: bool


def project_columns(cfg: Config) -> list[ProjectColumn]:
    """Every column a feature build of this project makes when its data holds every role
    configs/roles.yaml maps, and every profile field: the catalog's patterns expanded by
    configs/features.yaml (its windows and window roles, listed attributes), in the build's order.

    Read from the definition itself, not from the docs: the feature expression is built on empty
    tables (no data, no engine), once with everything and once without each role or field; what
    a column needs is what takes it away."""
    import ibis

    from features.customer_features import describe_column

    listed = () if cfg.features.categorical_attributes == "auto" else tuple(cfg.features.categorical_attributes)
    _distinct_names(cfg, listed)  # as a build refuses them: one named like a feature column would replace it
    events = ibis.table({"customer_id": "string", "ts": "timestamp", "role": "string", "amount": "float64",
                         "category": "string"}, name="events")
    customers = ibis.table({"customer_id": "string", "signup_at": "timestamp", "email_consent": "boolean",
                            "consent_updated_at": "timestamp", **{a: "string" for a in listed}}, name="customers")
    spec = feature_spec(cfg)
    full = DataProfile(frozenset(r for r, names in cfg.roles.event_roles.items() if names), has_signup=True,
                       has_consent_profile=True, categorical=listed, has_category=True)

    def columns(profile: DataProfile) -> set[str]:
        return set(customer_features(events, customers, datetime(2000, 1, 1), spec, profile).columns)

    every = customer_features(events, customers, datetime(2000, 1, 1), spec, full).columns
    without = {r: replace(full, roles=full.roles - {r}) for r in sorted(full.roles)}
    without |= {"customers.signup_at": replace(full, has_signup=False),
                "customers.email_consent + consent_updated_at": replace(full, has_consent_profile=False),
                "events.category": replace(full, has_category=False)}
    gone = {what: set(every) - columns(p) for what, p in without.items()}
    # A column that no single absence takes away may still need one of several (email_consent: a
    # profile's consent or a consent event): with none of anything, what appears with each alone
    bare = DataProfile(frozenset(), has_signup=False, has_consent_profile=False, categorical=listed, has_category=False)
    alone = {r: replace(bare, roles=frozenset({r})) for r in sorted(full.roles)}
    alone |= {"customers.signup_at": replace(bare, has_signup=True),
              "customers.email_consent + consent_updated_at": replace(bare, has_consent_profile=True)}
    always = columns(bare)
    unexplained = [c for c in every if c not in always and not any(c in names for names in gone.values())]
    brings = {what: columns(p) for what, p in alone.items()} if unexplained else {}
    excluded = set(cfg.training.exclude_features)
    out = []
    for name in every:
        group, meaning = describe_column(name) or ("profile", "a categorical profile attribute (listed in "
                                                             "configs/features.yaml), as text")
        needs = tuple(what for what, names in gone.items() if name in names)
        if not needs and name in unexplained:
            needs = ("one of: " + ", ".join(what for what, names in brings.items() if name in names),)
        out.append(ProjectColumn(name, group, _expanded_meaning(name, meaning), needs,
                                 name not in ("customer_id", "as_of") and name not in excluded))
    return out


def _expanded_meaning(name: str, meaning: str) -> str:
    """A pattern row's meaning for one of its columns: ``n_purchase_30d`` is "events of purchase in
    the last 30 days", without the pattern's "for each w in windows_days"."""
    import re

    m = re.search(r"_(\d+)d$", name)
    if m and ", for each" in meaning:
        meaning = meaning.split(", for each")[0].replace(" w days", f" {m.group(1)} days")
        role = re.fullmatch(r"n_([a-z_]+?)_\d+d", name)
        if role and "<role>" in meaning:
            meaning = meaning.replace("<role>", role.group(1))
    return meaning


def check_excluded(cfg: Config, profile: DataProfile) -> None:
    """Refuse a name in ``exclude_features`` that is no column the feature set can have (its catalog,
    patterns such as ``n_<role>_<w>d`` included, and this data's profile attributes): a typo would
    leave the feature in silently. A column of a group this data lacks is fine."""
    unknown = [c for c in cfg.training.exclude_features if not is_catalog_column(c) and c not in profile.categorical]
    if unknown:
        from features.customer_features import catalog

        names = [c for row, _, _ in catalog() for c in row.split(", ") if "<" not in c and c not in ("customer_id", "as_of")]
        raise ConfigError([ConfigIssue(
            cfg.origin("training.yaml", "exclude_features"), "exclude_features",
            f"{', '.join(map(repr, unknown))} {'is not a feature' if len(unknown) == 1 else 'are not features'} of "
            f"customer_features; expected column names such as {', '.join(names[:6])}, n_<role>_<w>d, or a profile "
            f"attribute ({', '.join(profile.categorical) or 'none in this data'}); the columns of a `dynseg features build` file are "
            "the names to use (`dynseg features describe --columns` lists this project's)")])


def feature_spec(cfg: Config) -> FeatureSpec:
    f = cfg.features
    return FeatureSpec(tuple(sorted(set(f.windows_days))), tuple(f.window_roles))


def label_spec(cfg: Config, target: str, horizon: str | None = None) -> LabelSpec:
    targets = list(type(cfg.labels).model_fields)
    if target not in targets:
        raise BadValue(f"target {target!r} is not one of {', '.join(map(repr, targets))} (configs/labels.yaml)")
    lc = getattr(cfg.labels, target)
    where = f"--horizon {horizon}" if horizon else f"configs/labels.yaml: {target}.horizon {lc.horizon}"
    try:
        h = parse_duration(horizon or lc.horizon)
    except BadValue as e:  # say which value: the option's or the config's
        raise BadValue(f"{where}: {e}") from None
    if h.total_seconds() <= 0:  # (over 100 years, parse_duration refuses)
        raise BadValue(f"{where}: expected a label window above zero and at most 100 years, such as 30d or 8w")
    return LabelSpec(target, h, lc.population, parse_duration(lc.active_window))


#: what the data lacks when a feature group is not computed, for the message that names it
_GROUP_NEEDS = {"categories": "the events have no `category` column (renamed upstream? map it under sources.events "
                              "columns in configs/catalog.yaml)",
                "tenure": "the customers have no `signup_at` column",
                "consent": "neither consent fields in the customers nor consent or unsubscribe events",
                "profile": "the customers lack the profile attributes configs/features.yaml names"}


def check_model_inputs(model: Any, label: str, target: str, columns: Iterable[str],
                       profile: DataProfile | None = None) -> None:
    """Refuse when ``model`` (a fitted PropensityModel, ``label`` such as "dynseg-churn version 3")
    needs a feature that ``columns`` lack: the feature configuration changed after it was trained,
    or (said when ``profile``, the run's data profile, lacks the features' group) the data did."""
    missing = model.missing_features(columns)
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        from features.customer_features import GROUP_ROLES, catalog

        group_of = {name: group for name, group, _ in catalog()}
        lacking = sorted({group_of.get(c) for c in missing} & set(profile.missing_groups())) if profile else []
        if lacking:
            why = "; ".join(_GROUP_NEEDS.get(g) or f"no {' or '.join(GROUP_ROLES.get(g, (g,)))} events" for g in lacking)
            raise ValueError(
                f"{label} needs {len(missing)} feature(s) this run's data cannot give: {shown} (group "
                f"{', '.join(lacking)}: {why}). The data changed after the model was trained: restore what it had "
                f"(`dynseg data validate` lists the columns found), or retrain (dynseg train {target}) and promote the "
                "new version")
        raise ValueError(
            f"{label} needs {len(missing)} feature(s) this run does not compute: {shown}. The feature "
            "configuration (configs/features.yaml, or the data's roles and profile attributes) changed after "
            f"it was trained: restore it, or retrain (dynseg train {target}) and promote the new version")


def run_warnings(cfg: Config, data: LoadedData, as_of: datetime, short_history: bool = True) -> list[str]:
    """What a run as of ``as_of`` should say before its results: the validation's warnings (repeated
    event ids dropped, event customers without a profile...), then stale data (when freshness warns
    rather than refuses; refusing raises here), then (unless ``short_history`` is False: a training
    set says it of its snapshots instead) less history before ``as_of`` than the longest window."""
    found = [_said(p) for p in data.report.problems if p.severity == "warning"]
    return (_in_the_future(as_of) + found + _skipped_identifiers(cfg, data) + freshness_warnings(cfg, data, as_of)
            + (_short_history(cfg, data, as_of) if short_history else []))


def _in_the_future(as_of: datetime) -> list[str]:
    """An ``as_of`` more than a day after now (a date is the end of that day, so today's date is
    up to a day ahead): days since, windows and tenure count days that have not happened, and
    freshness, which measures the log's lag behind ``as_of``, passes while it is within the lag."""
    now = now_utc()
    ahead = as_of - now
    if ahead <= timedelta(days=1):
        return []
    days = ahead.days
    return [f"as_of {as_of_text(as_of)} is {f'{days} days' if days > 1 else 'more than a day'} after now "
            f"({now:%Y-%m-%d %H:%M} UTC): days since, windows and tenure count days that have not happened yet "
            "(use today's date or an earlier one)"]


def _skipped_identifiers(cfg: Config, data: LoadedData) -> list[str]:
    """Identifiers too common to merge by (a test address, a kiosk): the run's customers are not
    merged through them, which its reader should know as well as ``data validate``'s."""
    skipped = data.identity.skipped_identifiers
    if skipped.empty:
        return []
    n = len(skipped)
    return [f"{n:,} identifier{'s' if n != 1 else ''} shared by more than identity.max_ids_per_identifier "
            f"({cfg.settings.identity.max_ids_per_identifier}) ids {'were' if n != 1 else 'was'} not used to merge "
            f"customers: {'; '.join(skipped_examples(data))} (raise the limit in configs/project.yaml if "
            f"{'they are' if n != 1 else 'it is'} one person's)"]


def _said(p: Problem) -> str:
    """A validation warning as a run says it: the message, a few examples (the event names, ids or
    rows it is about), the fix."""
    shown = f"; e.g. {', '.join(p.examples[:3])}" if p.examples else ""
    return f"{p.message}{shown} ({p.fix})"


def unprofiled_warnings(data: LoadedData, customer_ids: Any) -> list[str]:
    """The warning for the run's customers without a profile (``customer_ids``: those its features
    found, one per customer), when validation did not count them (see :func:`load_for_run`); and
    for ids that are a missing id written as text (:func:`placeholder_ids`)."""
    said = placeholder_id_warnings(customer_ids)
    if data.unknown_customers_counted:
        return said
    p = unknown_customers(data.con, data.report, customer_ids)
    return said + ([_said(p)] if p else [])


def placeholder_id_warnings(customer_ids: Any) -> list[str]:
    """A run's customer ids (an Arrow array or a pandas Series, one per customer) that are a
    missing id written as text ('NULL', 'None', 'N/A'...): each became one customer, with every
    event of every row so written, scored and put in segments like any other."""
    import pyarrow.compute as pc

    if not isinstance(customer_ids, (pa.Array, pa.ChunkedArray, pd.Series, np.ndarray)):
        return []  # (a Spark column: validation names them, see placeholder_id_problem)
    ids = customer_ids if isinstance(customer_ids, (pa.Array, pa.ChunkedArray)) else pa.array(customer_ids, pa.string())
    found = pc.filter(ids, pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(ids)),
                                    value_set=pa.array(PLACEHOLDER_IDS))).to_pylist()
    return [placeholder_id_text(sorted(found))] if found else []


def _short_history(cfg: Config, data: LoadedData, as_of: datetime) -> list[str]:
    """A log that starts less than the longest feature window before ``as_of``: those windows,
    recency and tenure see only what the log holds, and every customer looks newer than they are."""
    first = data.report.time_range(cfg.role_of)[0]
    longest = max(cfg.features.windows_days, default=0)
    if first is None or first >= as_of or (as_of - first).days >= longest:
        return []
    days = (as_of - first).days
    span = f"{days} day{'s' if days != 1 else ''}" if days else "less than a day"
    return [f"the event log starts {first:%Y-%m-%d}, {span} before {as_of_text(as_of)}: features over longer "
            f"windows (up to {longest}d), recency and tenure "
            "see only those days, so customers look newer and less active than they are, and segments built on "
            "older events (bounces, complaints, unsubscribes) lose those members, who may become sendable (load "
            "the older history, or use a later --as-of)"]


def _snapshots_short_of_history(cfg: Config, cutoffs: Sequence[datetime], first: datetime | None) -> list[str]:
    """Snapshots whose cutoff comes less than the longest feature window after the log starts
    (``training.min_history`` allows them): their longer windows, recency and tenure see only part
    of that window, and those customers look newer than at the later cutoffs, as ``features build``
    warns for one cutoff (:func:`_short_history`)."""
    longest = max(cfg.features.windows_days, default=0)
    short = [c for c in cutoffs if first is not None and (c - first).days < longest]
    if not short:
        return []
    which = (f"the snapshot as of {cutoff_label(short[0])}" if len(short) == 1 else
             f"{len(short)} of {len(cutoffs)} snapshots (as of {cutoff_label(short[-1])} to {cutoff_label(short[0])})")
    return [f"the event log starts {first:%Y-%m-%d}: {which} {'has' if len(short) == 1 else 'have'} less history than "
            f"the longest feature window ({longest}d), so their longer windows, recency and tenure see only part of "
            "it and customers there look newer and less active than at later cutoffs (load the older history, or "
            f"set training.min_history: {longest}d in configs/training.yaml to leave such snapshots out)"]


def newest_event(cfg: Config, data: LoadedData, as_of: datetime) -> datetime | None:
    """The newest event a run as of ``as_of`` sees (before it): validation's figure, unless the run
    is in the past and the log has grown since."""
    newest = data.report.time_range(cfg.role_of)[1]  # found during validation
    if newest is not None and newest >= as_of:
        newest = data.con.execute("SELECT max(ts) FROM events WHERE ts < ?", [as_of]).fetchall()[0][0]
    return newest


def freshness_warnings(cfg: Config, data: LoadedData, as_of: datetime) -> list[str]:
    """The freshness check of a run as of ``as_of`` (`data validate` makes it too): raises
    :class:`StaleDataError` when `freshness.action` refuses, else the warning, if any."""
    newest = newest_event(cfg, data, as_of)
    if newest is None:
        _why_no_events(cfg, data, as_of)
    fr = cfg.settings.freshness
    max_lag = timedelta(days=fr.max_lag_days)
    later = None
    if newest is not None and is_stale(newest, as_of, max_lag) and data.report.time_range(cfg.role_of)[1] >= as_of:
        later = data.con.execute("SELECT min(ts) FROM events WHERE ts >= ?", [as_of]).fetchall()[0][0]
    try:
        warning = check_freshness(newest, as_of, max_lag, fr.action, cfg.origin("project.yaml", "freshness", "action"),
                                  cfg.origin("project.yaml", "freshness", "max_lag_days"), later)
    except StaleDataError as e:
        said, fresh = _unmapped_newer(cfg, data, newest, as_of, max_lag) if e.try_later else ("", False)
        if fresh:  # the log is not late: its mapped events stopped
            raise RolesStopped(f"{e}{said}") from None
        if said:
            raise type(e)(f"{e}{said}") from None
        raise
    if warning:
        warning += _unmapped_newer(cfg, data, newest, as_of, max_lag)[0]
    return [warning] if warning else []


def _unmapped_newer(cfg: Config, data: LoadedData, newest: datetime, as_of: datetime,
                    max_lag: timedelta) -> tuple[str, bool]:
    """What stale data says of the event types no role maps (ignored, or unknown) whose newest
    event is after the newest one with a role, and whether one of them is itself fresh. Freshness
    counts the events with a role: a log whose purchase event was renamed at the source still
    arrives, and "Load newer events" (exit 75, try again later) had a scheduler retry forever."""
    newer = sorted(((e, first, last) for e, (_, first, last) in data.report.event_types.items()
                    if e not in cfg.role_of and last is not None and last > newest and first is not None
                    and first < as_of), key=lambda x: x[2], reverse=True)
    if not newer:
        return "", False
    ignored = set(cfg.roles.ignore)

    def until(last: datetime) -> str:  # validation's figure is the log's newest, which may be after as_of
        return f"newest {last:%Y-%m-%d %H:%M} UTC" if last < as_of else "on past the as_of"

    shown = ", ".join(f"{e!r} ({'ignored' if e in ignored else 'no role'}, {until(last)})"
                      for e, _, last in newer[:5]) + (", ..." if len(newer) > 5 else "")
    fresh = any(as_of - min(last, as_of) <= max_lag for _, _, last in newer)
    return (f". The log itself {'goes on' if fresh else 'is newer'} in event types no role maps: {shown}; freshness "
            "counts only events with a role. If the shop renamed an event (a purchase, an email), map the new name "
            "under event_roles in configs/roles.yaml"), fresh


def _why_no_events(cfg: Config, data: LoadedData, as_of: datetime) -> None:
    """No event before ``as_of``: say whether the log holds only event types without a role, or
    starts at or after the cutoff (an empty log is refused by validation before this)."""
    types = data.report.event_types  # event_type -> (rows, first ts, last ts)
    total = sum(n for n, _, _ in types.values())
    mapped = {e: v for e, v in types.items() if e in cfg.role_of}
    if total and not mapped:
        shown = ", ".join(repr(e) for e in sorted(types, key=lambda e: -types[e][0])[:5])
        raise NoEventsBefore(
            f"none of the log's {total:,} events has a role: its event types ({shown}"
            f"{', ...' if len(types) > 5 else ''}) are all listed under ignore: in configs/roles.yaml, so there is "
            "nothing to compute features from; map the ones that are purchases, emails or visits under event_roles")
    firsts = [first for _, first, _ in mapped.values() if first is not None]
    if firsts and min(firsts) >= as_of:
        raise NoEventsBefore(
            f"no events before as_of {as_of_text(as_of)}: the log starts at {min(firsts):%Y-%m-%d %H:%M} UTC; "
            "pick a later --as-of")


def build_features_job(cfg: Config, as_of: datetime, engine: str | None = None, out: Path | None = None,
                       say: Callable[[str], None] | None = None) -> FeatureRun:
    """``dynseg features build``: features of every known customer as of ``as_of``. ``say(stage)``
    is told each stage as it starts."""
    say = say or (lambda _: None)
    if out is not None:
        check_out(out, cfg=cfg)  # before the work, not after it
    say("validating the sources")
    data = load_for_run(cfg, as_of)
    with data.reading():  # a source rewritten under the run: refused before anything is written
        warnings = run_warnings(cfg, data, as_of)
        profile = data_profile(cfg, data, before=as_of)  # later events add no columns: the same file whatever came after
        if (engine or cfg.settings.engine) == "spark":
            say(SPARK_START)
        eng = open_engine(cfg, data, engine)
        say("computing features")
        try:
            expr = customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), profile,
                                     consents=eng.consents())
            warnings += _later_roles_note(cfg, data, eng, as_of, profile, expr.columns)
            if eng.name == "duckdb":
                # DuckDB's Arrow result is kept as it is (a Parquet file is written from it; pandas
                # only on demand), sorted in Arrow rather than by an ORDER BY (see sort_by_customer).
                run = FeatureRun(profile, eng.name, warnings, table=sort_by_customer(eng.execute_arrow(expr)))
            else:
                run = FeatureRun.from_frame(eng.execute(expr.order_by("customer_id")), profile, eng.name, warnings)
        finally:
            eng.close()
        ids = run.table["customer_id"] if run.table is not None else run.frame["customer_id"]
        run.warnings += unprofiled_warnings(data, ids)
    if out is not None:
        say(f"writing {out.name}")
        run.path = run.write(out)
    return run


def _later_roles_note(cfg: Config, data: LoadedData, eng, as_of: datetime, profile: DataProfile,
                      columns: tuple[str, ...]) -> list[str]:
    """The columns a role whose first event is at or after the cutoff leaves out of this frame (a
    frame as of a later date has them), named per role: said, or a stack of frames of several dates
    changes its columns unseen. Only the query's schema is built, nothing is run."""
    later = {role: first for role, (_, first, _) in data.report.role_summary(cfg.role_of).items()
             if role not in profile.roles and first is not None}
    if not later:
        return []
    said = []
    for role, first in sorted(later.items(), key=lambda kv: kv[1]):
        wider = replace(profile, roles=profile.roles | {role})
        gained = [c for c in customer_features(eng.events(), eng.customers(), as_of, feature_spec(cfg), wider,
                                               consents=eng.consents()).columns if c not in columns]
        if gained:
            said.append(f"{role} (first event {first:%Y-%m-%d %H:%M}): {', '.join(gained)}")
    if not said:
        return []
    return [f"columns left out as of this cutoff, because their role has no event before it: {'; '.join(said)}. "
            "A frame built as of a later date has them; for frames of several dates with the same columns, use "
            "`dynseg features training-set` (its snapshots share one set of columns)"]


def features_as_of(cfg: Config, as_of: datetime, customer_ids: list[str] | None = None) -> pd.DataFrame:
    """Features as of a past run's ``as_of`` on DuckDB (point in time: the values that run saw),
    for every customer or only ``customer_ids``; no freshness check (the run already passed it)."""
    data = load_for_run(cfg, as_of)
    eng = open_engine(cfg, data, "duckdb")
    try:
        events, customers, consents = eng.events(), eng.customers(), eng.consents()
        if customer_ids is not None:
            events = events.filter(events.customer_id.isin(customer_ids))
            customers = customers.filter(customers.customer_id.isin(customer_ids))
            if consents is not None:
                consents = consents.filter(consents.customer_id.isin(customer_ids))
        return eng.execute(customer_features(events, customers, as_of, feature_spec(cfg), data_profile(cfg, data),
                                             consents=consents))
    finally:
        eng.close()


def write_arrow(table: pa.Table, out: Path) -> Path:
    """An Arrow table to a Parquet file, atomically."""
    import pyarrow.parquet as pq

    with atomic_target(out) as tmp:
        pq.write_table(table, tmp)
    return out


def check_out(out: Path, example: str = "customer_features.parquet", cfg: Config | None = None) -> None:
    if cfg is not None:
        not_the_projects_own(cfg, out)
    if out.is_dir():
        raise BadValue(f"--out {out} is a folder; expected a file path ending in .parquet or .csv "
                         f"(e.g. {out / example})")
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise BadValue(f"--out {out}: expected a file name ending in .parquet or .csv; found {out.suffix or 'no suffix'!r}")
    check_writable(out, given=True)


def write_frame(frame: pd.DataFrame, out: Path, cfg: Config | None = None) -> Path:
    """Parquet or CSV by suffix, atomically, written straight to a temp file beside ``out``
    (with ``cfg``, refused when ``out`` is one of its sources)."""
    check_out(out, cfg=cfg)
    with atomic_target(out) as tmp:
        if out.suffix.lower() == ".csv":
            _times_in_full(frame).to_csv(tmp, index=False)
        else:
            import pyarrow.parquet as pq

            schema = _plain_schema(frame)
            with pq.ParquetWriter(tmp, schema) as writer:
                # a slice at a time: the whole frame as Arrow beside the frame held it twice (a
                # 6M-row training set, 3.3 GB, peaked at 6.6 GB while it was written)
                for start in range(0, max(len(frame), 1), WRITE_ROWS):
                    part = pa.Table.from_pandas(frame.iloc[start:start + WRITE_ROWS], schema=schema, preserve_index=False)
                    writer.write_table(part.replace_schema_metadata(None))
    return out


def _times_in_full(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each timestamp column whose every value is a midnight spelled with its time
    (``2026-06-02 00:00:00``). pandas writes such a column as bare dates (``2026-06-02``), and a
    bare date is the end of that day to dynseg (and to a reader who knows its ``--as-of``): an
    ``as_of`` of 2026-06-02 00:00 would read a day late. Other columns pandas writes in full."""
    fixed = {}
    for name in frame.columns:
        s = frame[name]
        if not pd.api.types.is_datetime64_any_dtype(s):
            continue
        known = s.dropna()
        if known.empty or (known != known.dt.normalize()).any():
            continue
        codes, uniques = pd.factorize(s)  # a few distinct cutoffs, usually: format those only
        text = np.asarray(uniques.strftime("%Y-%m-%d %H:%M:%S" + ("%z" if uniques.tz is not None else "")), dtype=object)
        fixed[name] = pd.Series(np.where(codes >= 0, text[codes.clip(0)], None), index=s.index, dtype=object)
    return frame.assign(**fixed) if fixed else frame


#: Rows converted to Arrow and written at a time (a row group each)
WRITE_ROWS = 500_000


def _plain_schema(frame: pd.DataFrame) -> pa.Schema:
    """A frame's schema as the Arrow table DuckDB's engine would hand over: ``string`` not pandas'
    ``large_string``, and no pandas metadata, so files from both engines share one schema (and
    can be read as one dataset). Taken from the whole frame: a slice's all-null column has a type."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    # a text column with no value (an empty frame, a night without exits) has no type to Arrow:
    # `null`, which no other night's file shares (a dataset of them failed: no cast from string to null)
    return pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type)
                      or (pa.types.is_null(f.type) and frame[f.name].dtype == object) else f for f in schema])


@dataclass
class TrainingData:
    frame: pd.DataFrame
    plan: SnapshotPlan
    profile: DataProfile
    label: LabelSpec
    warnings: list[str]
    first_event: datetime
    last_event: datetime
    #: realized label rates one year before the validation and test cutoffs (None: no history)
    rates_year_before: dict[str, float | None] = field(default_factory=dict)
    #: the test and valid snapshots' purchase histories of every buyer, whatever the population (BG/NBD's fit)
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)


def export_training_set_job(
    cfg: Config, target: str, out: Path, as_of: datetime | None = None, horizon: str | None = None,
    engine: str | None = None, progress: Callable[[int, int], None] | None = None,
) -> TrainingData:
    """``dynseg features training-set``: the snapshots ``dynseg train`` would fit on, written to
    ``out`` (Parquet or CSV, checked before the work)."""
    check_out(out, f"training_set_{target}.parquet", cfg)
    td = training_set_job(cfg, target, as_of, horizon, engine, progress)
    write_frame(td.frame, out)
    return td


def training_set_job(
    cfg: Config, target: str, as_of: datetime | None = None, horizon: str | None = None,
    engine: str | None = None, progress: Callable[[int, int], None] | None = None,
) -> TrainingData:
    """Stacked snapshots with labels for ``target``; as_of defaults to the end of the data."""
    label = label_spec(cfg, target, horizon)  # an unknown target or horizon: before any work
    data = load_for_run(cfg, as_of)
    first, last = data.report.time_range(cfg.role_of)
    end = as_of or last
    # the history short of the longest window is said of the snapshots (_snapshots_short_of_history):
    # the single-cutoff warning would name an --as-of the user may not have given
    warnings = run_warnings(cfg, data, end, short_history=False)
    lag = now_utc() - last if last is not None else None
    if as_of is None and lag is not None and is_stale(last, now_utc(), timedelta(days=cfg.settings.freshness.max_lag_days)):
        # the cutoff is where the log ends, so freshness against it always passed: a log that had
        # stopped being refreshed trained a model on last month in silence
        warnings.append(f"the newest event is from {last:%Y-%m-%d %H:%M} UTC, {lag.days} days before now (freshness allows "
                        f"{cfg.settings.freshness.max_lag_days:g}): the snapshots end there. If the events file should "
                        "hold later events, it has not been refreshed; to train on the past on purpose, give --as-of")
    if as_of is not None:  # trained in the past: the data it used ends before as_of, not where the log ends now
        last = newest_event(cfg, data, as_of)
        if last is not None:
            # The label windows end by the newest event, as without --as-of: the days after it were
            # not observed (a log that lands a day late), and a label window over them would read
            # them as days without a purchase. Said when the data is stale enough to warn about.
            if is_stale(last, as_of, timedelta(days=cfg.settings.freshness.max_lag_days)):
                warnings.append(f"the label windows end by the newest event ({last:%Y-%m-%d %H:%M} UTC), not at "
                                f"{as_of_label(as_of)}: after it the log holds nothing, and labels over those days "
                                "would read them as days without a purchase")
            end = last
    t = cfg.training
    plan = plan_snapshots(first, end, label.horizon, t.snapshots, parse_duration(t.step), parse_duration(t.min_history),
                          active_window=label.active_window if label.population == "active" else None)
    warnings += _snapshots_short_of_history(cfg, plan.cutoffs, first)
    # trained as of a past instant: its columns from what the data held before it, as its rows are
    # (a role first seen after it gave columns of 0 for everyone, and re-running the same --as-of
    # changed the model's inputs as the log grew)
    profile = data_profile(cfg, data, before=as_of)
    check_excluded(cfg, profile)  # before the long work
    min_history = parse_duration(t.min_history)
    with data.reading():  # a source rewritten under the long work: refused, not trained on
        eng = open_engine(cfg, data, engine)
        try:
            histories: dict[str, pd.DataFrame] = {}
            frame = build_training_set(eng, feature_spec(cfg), profile, label, plan, t.min_class_examples, progress,
                                       histories)
            year = timedelta(days=365)
            found = label_rates(eng, profile, [(label, plan.cutoffs[k] - year) for k in (0, 1)], first, min_history)
            rates = dict(zip(("test", "valid"), found))
        finally:
            eng.close()
        warnings += unprofiled_warnings(data, frame["customer_id"].unique())
    return TrainingData(frame, plan, profile, label, warnings, first, last, rates, histories)
