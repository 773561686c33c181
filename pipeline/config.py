"""The one config loader: YAML files under ``configs/`` into typed settings.

Files: ``project.yaml`` (settings), ``catalog.yaml`` (sources), ``roles.yaml`` (event names ->
roles). A profile (``profiles/<name>.yaml``) overrides settings; personal overrides and
credentials live in the git-ignored ``configs/local/`` (same file names, merged last). Every error
in every file is reported at once, naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from features.asof import parse_duration
from features.contract import ROLES
from features.engine import MEMORY_LIMIT
from features.sources import SourceSpec

#: config names that are also file and column names: lower_snake_case
_SNAKE = r"^[a-z][a-z0-9_]*$"

Role = Literal[ROLES]  # type: ignore[valid-type]


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (int or float, optional or not), not a flag."""
    import types
    import typing

    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return bool(args) and all(a in (int, float) for a in args)
    return False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_flag_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads yes/no/on/off as true/false, which pydantic takes as 1/0: `min_size_for_change: off`
        # checked every segment's size change, the opposite of off
        if isinstance(value, bool) and info.field_name in cls.model_fields \
                and _numeric(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("value_error", f"expected a number; found {str(value).lower()} (YAML reads "
                                      "yes/no/on/off as true/false): write the number")
        return value


class Freshness(_Strict):
    max_lag_days: float = Field(3.0, ge=0, description="newest event may be at most this old at as_of")
    action: Literal["refuse", "warn"] = "refuse"


class IdentitySettings(_Strict):
    max_ids_per_identifier: int = Field(20, ge=2, description="identifiers shared by more ids are not trusted")


class SparkSettings(_Strict):
    """``spark:`` in configs/project.yaml or a profile: where the Spark engine runs."""

    master: str = Field("local[2]", min_length=1, description="local[N], or a cluster's master URL (spark://, yarn, k8s://)")
    conf: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Spark settings (spark.executor.memory: 8g), over dynseg's own and spark-defaults.conf")
    staging_dir: str | None = Field(
        None, min_length=1, description="where a run stages the log it hands Spark and what Spark hands back; "
                                        "on a cluster, a folder every executor sees under the same path")

    @field_validator("master")
    @classmethod
    def _a_master_url(cls, v: str) -> str:
        # what Spark accepts; a misspelt one (lokal[2]) was taken for a cluster and asked for a staging_dir
        import re

        # local[N|*] with an optional retry count, as Spark parses it: local[x] passed here and Spark
        # then failed with 21 lines of Java ("Could not parse Master URL")
        # (Spark's own patterns: LOCAL_N_REGEX, LOCAL_N_FAILURES_REGEX, LOCAL_CLUSTER_REGEX)
        if not re.fullmatch(r"local(\[([0-9]+|\*)\]|\[([0-9]+|\*)\s*,\s*[0-9]+\])?|"
                            r"local-cluster\[\s*[0-9]+\s*,\s*[0-9]+\s*,\s*[0-9]+\s*\]|yarn|(spark|k8s|mesos)://.+",
                            v.strip()):
            raise PydanticCustomError("value_error", "expected a Spark master URL: local[N] (this machine, N cores; "
                                      "local[*] for all of them), spark://HOST:PORT, k8s://HOST:PORT or yarn; "
                                      f"found {v!r}")
        return v.strip()

    @field_validator("conf", mode="before")
    @classmethod
    def _flat_values(cls, v: Any) -> Any:
        # one error at the key (a nested value read as four, under .str, .int, .float and .bool)
        if isinstance(v, dict):
            for k, value in v.items():
                if isinstance(value, (dict, list)) or value is None:
                    raise PydanticCustomError(
                        "value_error", f"{k}: expected one value (a text, a number or true/false, as Spark "
                        f"settings are); found {type(value).__name__ if value is not None else 'nothing'} {value!r}. "
                        "Write the setting in full on one line: spark.executor.memory: 8g")
        return v


class Settings(_Strict):
    workspace: str = ".dynseg"
    engine: Literal["duckdb", "spark"] = "duckdb"
    spark: SparkSettings = SparkSettings()
    tracking_uri: str | None = None
    threads: int | None = Field(None, ge=1)
    memory_limit: str | None = Field(None, pattern=MEMORY_LIMIT.pattern,
                                     description="cap on the embedded engine's memory, e.g. 2GB; None: DuckDB's default")
    freshness: Freshness = Freshness()
    identity: IdentitySettings = IdentitySettings()
    # marks amounts in explanations: a symbol before them (€, $, £), a code after (EUR); empty: none
    currency: Annotated[str, BeforeValidator(lambda v: "" if v is None else v)] = Field(
        "", max_length=5, pattern=r"^[^\s\d.,+-]*$")


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _positive_duration(value: str) -> str:
    if parse_duration(value).total_seconds() <= 0:
        raise ValueError(f"expected a duration above zero such as 30d or 8w; found {value!r}")
    return value


Duration = Annotated[str, AfterValidator(_duration)]
PositiveDuration = Annotated[str, AfterValidator(_positive_duration)]


def _not_a_flag(value: Any) -> Any:
    """``true`` is a number to pydantic (1): a window of ``[7, true]`` read as one day."""
    if isinstance(value, bool):
        raise PydanticCustomError("value_error", f"expected a number of days such as 30; found {str(value).lower()}")
    return value


def _no_percent(value: Any) -> Any:
    """``10%`` for a fraction: "unable to parse string as a number" said nothing of the form wanted."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip().rstrip("%").strip()
        shown = f" ({float(number) / 100:g} for {value.strip()})" if number.replace(".", "", 1).isdigit() else ""
        raise PydanticCustomError("value_error", f"expected a fraction from 0 to 0.5{shown or ', such as 0.1'}; "
                                  f"found {value!r}")
    return value


def _auto_or_list(value: Any) -> Any:
    """``auto`` in any case, or a list of names; one message instead of one per union member."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if not isinstance(value, list):
        raise PydanticCustomError("value_error", "expected auto or a list of attribute names such as [country, plan]; "
                                  f"found {value!r}")
    # the profile's contract fields are read by the feature set itself (days_since_signup,
    # email_consent): as a listed attribute, one was typed as text and `features describe` crashed
    contract = [v for v in value if isinstance(v, str) and v.strip() in PROFILE_CONTRACT]
    if contract:
        raise PydanticCustomError("value_error", f"{contract} {'is a field' if len(contract) == 1 else 'are fields'} "
                                  "of the customers contract, which the feature set reads itself (signup_at: "
                                  "days_since_signup; email_consent and consent_updated_at: email_consent); list "
                                  "profile attributes only, such as [country, plan]")
    return value


#: the customers source's contract fields (design.md §2); every other column of it is an attribute
PROFILE_CONTRACT = ("customer_id", "signup_at", "email_consent", "consent_updated_at")


class FeaturesConfig(_Strict):
    """``configs/features.yaml``: what the customer_features set computes."""

    windows_days: list[Annotated[int, BeforeValidator(_not_a_flag), Field(ge=1, le=36_500)]] = [7, 30, 90, 365]
    window_roles: list[Role] = ["purchase", "email_open", "email_click", "page_view", "add_to_cart"]
    categorical_attributes: Annotated[Literal["auto"] | list[str], BeforeValidator(_auto_or_list)] = "auto"
    max_categories: int = Field(50, ge=2)

    @field_validator("windows_days", "window_roles", "categorical_attributes", mode="wrap")
    @classmethod
    def _each_once(cls, values: Any, handler: Callable[[Any], list]) -> list:
        # wrapped around the items' own checks, so that a repeat is reported with a bad item
        # (windows_days: [7, 7, 0]), every configuration error at once
        def repeats(items: Any) -> str | None:
            items = [v for v in items if isinstance(v, Hashable)] if isinstance(items, list) else []
            twice = sorted({v for v in items if items.count(v) > 1}, key=items.index)
            return f"{', '.join(map(str, twice))} given more than once; list each once" if twice else None

        try:
            checked = handler(values)
        except ValidationError as e:
            said = repeats(values)
            if said is None:
                raise
            found = [{k: d[k] for k in ("type", "loc", "input", "ctx") if k in d} for d in e.errors()]
            found.append({"type": PydanticCustomError("value_error", said), "loc": (), "input": values})
            raise ValidationError.from_exception_data(e.title, found) from None
        said = repeats(checked)  # as read: 30 and "30" are one window
        if said:
            raise ValueError(said)
        return checked


class LabelConfig(_Strict):
    horizon: PositiveDuration
    population: Literal["known", "active"] = "known"
    active_window: PositiveDuration = "180d"
    # the base rate expected at a cutoff: the latest realized rate moved by last year's change between
    # the same dates (seasonal), or the latest realized rate as it is (latest); saved with each model
    base_rate: Literal["seasonal", "latest"] = "seasonal"


class LabelsConfig(_Strict):
    """``configs/labels.yaml``: the two targets."""

    purchase: LabelConfig = LabelConfig(horizon="30d")
    churn: LabelConfig = LabelConfig(horizon="60d", population="active")

    @field_validator("churn")
    @classmethod
    def _churn_is_over_active(cls, churn: LabelConfig) -> LabelConfig:
        if churn.population != "active":  # reported at churn, not at the file's top level
            raise ValueError("churn is defined over customers active at the cutoff: churn.population must be 'active'")
        return churn


class ModelParams(_Strict):
    n_estimators: int = Field(1000, ge=1)
    learning_rate: float = Field(0.05, gt=0, le=1)
    num_leaves: int = Field(31, ge=2)
    min_child_samples: int = Field(50, ge=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    early_stopping_rounds: int = Field(50, ge=1)
    calibration: Literal["auto", "platt", "isotonic"] = "auto"
    random_state: int = 0


Metric = Literal["roc_auc", "pr_auc", "brier", "log_loss", "lift_top_decile"]


class Criterion(_Strict):
    """One validation criterion: an absolute bound, or a margin over the best baseline."""

    metric: Metric
    min: float | None = None
    max: float | None = None
    min_over_best_baseline: float | None = None
    max_over_best_baseline: float | None = None
    # roc_auc over the best baseline: the lower end of the gain's paired DeLong 95 % interval must
    # clear the margin, not only the point estimate (a gain the test snapshot cannot tell from noise)
    significant: bool = False

    @model_validator(mode="after")
    def _exactly_one_bound(self) -> Criterion:
        bounds = [k for k in ("min", "max", "min_over_best_baseline", "max_over_best_baseline") if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise ValueError(f"a criterion needs exactly one of min, max, min_over_best_baseline, max_over_best_baseline; found {bounds or 'none'}")
        if self.significant and (self.metric != "roc_auc" or self.min_over_best_baseline is None):
            raise ValueError("significant: true needs metric roc_auc with min_over_best_baseline (the gain over the best "
                             f"baseline has an interval only for the AUC); found metric {self.metric}, {bounds[0]}")
        return self


class RegistryConfig(_Strict):
    experiment: str = "dynseg"
    names: dict[Literal["purchase", "churn"], str] = {"purchase": "dynseg-purchase", "churn": "dynseg-churn"}

    @field_validator("names")
    @classmethod
    def _one_name_per_target(cls, names: dict[str, str]) -> dict[str, str]:
        # one registered model holding both targets' versions: a churn version could become the
        # purchase champion, and every comparison would mix the two
        shared = {n for n in names.values() if list(names.values()).count(n) > 1}
        if shared:
            raise ValueError(f"each target needs a registered model of its own; found {', '.join(sorted(t for t, n in names.items() if n in shared))} "
                             f"all named {', '.join(map(repr, sorted(shared)))}")
        return names


class TrainingConfig(_Strict):
    """``configs/training.yaml``: how the stacked training set is cut, the model, the gate."""

    snapshots: int = Field(6, ge=3, le=10_000)  # (10,000 daily snapshots are 27 years)
    step: PositiveDuration = "30d"
    min_history: Duration = "90d"
    min_class_examples: int = Field(50, ge=1)
    bootstrap_samples: int = Field(200, ge=10)
    #: Feature columns the models never take as inputs. ``email_consent`` by default: the
    #: customers source holds consent as it is now, so at a past cutoff whether it is known
    #: depends on whether it changed later (see configs/training.yaml).
    exclude_features: list[str] = ["email_consent", "days_since_last_event"]
    model: ModelParams = ModelParams()
    registry: RegistryConfig = RegistryConfig()
    validation_criteria: list[Criterion] = [
        Criterion(metric="roc_auc", min_over_best_baseline=0.0, significant=True),
        Criterion(metric="brier", max_over_best_baseline=0.0),
    ]


class BandLevelConfig(_Strict):
    """One band level; every level but the last has exactly one rule (see models/bands.py)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    min_probability: float | None = Field(None, gt=0, lt=1)
    top_percent: float | None = Field(None, gt=0, lt=100)
    min_precision: float | None = Field(None, gt=0, le=1)


def _check_bands(levels: list[BandLevelConfig]) -> list[BandLevelConfig]:
    if len(levels) < 2:
        raise ValueError(f"a band list needs at least two levels (the last one takes everyone left); found {len(levels)}")
    names = [lv.name for lv in levels]
    if len(set(names)) != len(names):
        raise ValueError(f"band names must be unique; found {names}")
    for i, lv in enumerate(levels):
        rules = [r for r in ("min_probability", "top_percent", "min_precision") if getattr(lv, r) is not None]
        last = i == len(levels) - 1
        if last and rules:
            raise ValueError(f"the last band ({lv.name!r}) takes everyone left and has no rule; found {rules}")
        if not last and len(rules) != 1:
            raise ValueError(f"band {lv.name!r} needs exactly one of min_probability, top_percent, "
                             f"min_precision; found {rules or 'none'}")
    # A customer gets the first level whose threshold they reach: a later level with a stricter
    # rule of the same kind could never hold anyone.
    for rule, stricter in (("min_probability", "higher"), ("top_percent", "smaller"), ("min_precision", "higher")):
        seen = [(lv.name, getattr(lv, rule)) for lv in levels if getattr(lv, rule) is not None]
        for (above, a), (below, b) in zip(seen, seen[1:]):
            if (b >= a) if stricter == "higher" else (b <= a):
                raise ValueError(f"bands run from the highest level down: {below!r} ({rule} {b:g}) comes after {above!r} "
                                 f"({rule} {a:g}) but is not looser, so it would stay empty; expected a "
                                 f"{'lower' if stricter == 'higher' else 'larger'} {rule} than {a:g}")
    return levels


BandList = Annotated[list[BandLevelConfig], AfterValidator(_check_bands)]


class BandsConfig(_Strict):
    """``configs/bands.yaml``: band levels per target, resolved at training and saved with the model."""

    purchase: BandList = [BandLevelConfig(name="high", top_percent=10), BandLevelConfig(name="medium", top_percent=30),
                          BandLevelConfig(name="low")]
    churn: BandList = [BandLevelConfig(name="high", min_precision=0.85), BandLevelConfig(name="medium", min_probability=0.5),
                       BandLevelConfig(name="low")]


SegmentKind = Literal["predictive", "lifecycle", "value", "behavioral", "rule", "suppression"]


class SegmentDef(_Strict):
    name: str = Field(pattern=_SNAKE, description="lower_snake_case; also the export file name")
    description: str = ""  # required: checked by segment_issues with the other cross-checks
    owner: str = ""
    kind: SegmentKind
    where: str = Field(min_length=1)
    exclude: list[str] = []
    holdout: Annotated[float, BeforeValidator(_no_percent)] = Field(0.0, ge=0, le=0.5)
    # what lift counts as a conversion: a purchase within the purchase label's horizon, or within the
    # churn label's (retention); unset, a rule on churn_* columns means retention
    outcome: Literal["purchase", "retention"] | None = None
    # the name the holdout is drawn under, md5(salt|holdout_key|customer): a renamed segment keeps its
    # holdout by setting its former name here (unset: the segment's own name)
    holdout_key: str | None = Field(None, pattern=_SNAKE)


def segment_outcome(segment: dict) -> tuple[str, bool]:
    """The lift outcome of a segment definition (as stored in a run's config): ``purchase`` or
    ``retention``, and whether it was inferred from the rule (no ``outcome`` key)."""
    if segment.get("outcome"):
        return segment["outcome"], False
    return ("retention" if "churn_" in segment["where"] else "purchase"), True


class SegmentsConfig(_Strict):
    """``configs/segments.yaml``: governed segment definitions (checked by :func:`segment_issues`)."""

    holdout_salt: str = Field("dynseg", min_length=1)
    suppress_always: list[str] = []
    segments: list[SegmentDef] = []

    def by_name(self) -> dict[str, SegmentDef]:
        return {s.name: s for s in self.segments}


class ScoringConfig(_Strict):
    """``configs/scoring.yaml``: what a scoring run scores and exports."""

    targets: list[Literal["purchase", "churn"]] = ["purchase", "churn"]
    export_formats: list[Literal["parquet", "csv"]] = Field(["parquet", "csv"], min_length=1)  # [] wrote no segment file
    experiment: str = "dynseg-scoring"
    reason_codes: bool = True  # top-3 reasons for every sendable customer (the costliest stage)


class DriftConfig(_Strict):
    max_drift_share: float = Field(0.3, gt=0, le=1)
    key_columns: list[str] = []
    method: Literal["psi", "ks", "wasserstein", "jensenshannon", "kl_div", "chisquare", "z"] | None = None
    column_threshold: float | None = Field(None, gt=0)
    max_rows: int = Field(20_000, ge=100)


class SegmentHealthConfig(_Strict):
    max_size_change: float = Field(0.5, gt=0)
    min_size_for_change: int = Field(100, ge=0)
    max_coverage_drop: float = Field(0.05, ge=0, le=1)
    min_customers_kept: float = Field(0.5, ge=0, le=1)


class LiftConfig(_Strict):
    alpha: float = Field(0.05, gt=0, lt=1)
    power: float = Field(0.8, gt=0, lt=1)
    min_holdout: int = Field(30, ge=1)
    min_expected_conversions: float = Field(5, ge=0)
    max_mde: float | None = Field(0.05, gt=0, lt=1)
    # a campaign whose treated converted significantly less than its holdout (the interval below 0):
    # an alarm (exit 3), as a model below its AUC floor is
    alarm_on_harm: bool = True


class QualityConfig(_Strict):
    auc_floor: dict[Literal["purchase", "churn"], Annotated[float, Field(ge=0.5, le=1)]] = {"purchase": 0.75, "churn": 0.62}


class MonitoringConfig(_Strict):
    """``configs/monitoring.yaml``: drift, segment-health, lift and decay thresholds."""

    drift: DriftConfig = DriftConfig()
    segment_health: SegmentHealthConfig = SegmentHealthConfig()
    lift: LiftConfig = LiftConfig()
    quality: QualityConfig = QualityConfig()
    # the MLflow experiment that records monitor and lift runs
    experiment: str = Field("dynseg-monitoring", min_length=1)


def segment_issues(cfg: SegmentsConfig, file: str = "configs/segments.yaml") -> list[ConfigIssue]:
    """Checks across segments: blank owner/description, duplicate names, unknown or cyclic
    exclusions, suppressions that are not suppression segments, holdouts on suppressions."""
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    for i, s in enumerate(cfg.segments):
        key = f"segments[{i}]"
        for attr in ("owner", "description"):
            if not getattr(s, attr).strip():
                issues.append(ConfigIssue(file, f"{key}.{attr}", f"segment {s.name!r} needs {'an' if attr == 'owner' else 'a'} {attr} "
                                          f"({'who to ask about it' if attr == 'owner' else 'what it is for'}); "
                                          f"found {getattr(s, attr)!r}"))
        if s.name in seen:
            issues.append(ConfigIssue(file, f"{key}.name", f"duplicate segment name {s.name!r} "
                                      f"(first defined at segments[{seen[s.name]}]); names must be unique"))
        seen.setdefault(s.name, i)
        if s.kind == "suppression" and s.holdout:
            issues.append(ConfigIssue(file, f"{key}.holdout", f"suppression segment {s.name!r} cannot have a "
                                      f"holdout (it is never sent to); found {s.holdout}"))
    names = cfg.by_name()
    for i, s in enumerate(cfg.segments):
        for attr in ("outcome", "holdout_key"):
            if getattr(s, attr) and not s.holdout:  # nothing would read it
                issues.append(ConfigIssue(file, f"segments[{i}].{attr}", f"segment {s.name!r} sets {attr} but has no "
                                          "holdout: only a segment with a holdout uses it (lift, the holdout draw); "
                                          "remove it, or give the segment a holdout"))
        if s.holdout_key and s.holdout_key != s.name and s.holdout_key in names:
            issues.append(ConfigIssue(file, f"segments[{i}].holdout_key", f"segment {s.name!r} draws its holdout as "
                                      f"{s.holdout_key!r}, another segment of this file: members of both would always "
                                      "land on the same side. holdout_key is for a renamed segment's former name"))
    for i, s in enumerate(cfg.segments):
        for other in s.exclude:
            if other not in names:
                close = difflib.get_close_matches(other, list(names), n=1)
                issues.append(ConfigIssue(file, f"segments[{i}].exclude", f"segment {s.name!r} excludes {other!r}, "
                                          "which is not defined; "
                                          + (f"did you mean {close[0]!r}? " if close else "")
                                          + f"remove it from the segment's exclude, or define it (defined: {sorted(names)})"))
            elif other == s.name:
                issues.append(ConfigIssue(file, f"segments[{i}].exclude", f"segment {s.name!r} excludes itself"))
    for i, name in enumerate(cfg.suppress_always):
        if name not in names:
            suppressions = sorted(n for n, d in names.items() if d.kind == "suppression")
            close = difflib.get_close_matches(name, suppressions, n=1)
            issues.append(ConfigIssue(file, f"suppress_always[{i}]", f"{name!r} is not a defined segment; "
                                      + (f"did you mean {close[0]!r}? " if close else "")
                                      + f"remove it from suppress_always, or define it (suppression segments: {suppressions})"))
        elif names[name].kind != "suppression":
            issues.append(ConfigIssue(file, f"suppress_always[{i}]", f"{name!r} is a {names[name].kind} segment; "
                                      "only kind: suppression segments can be applied to every segment"))
    cycle = _exclusion_cycle(cfg)
    if cycle:
        i = next(k for k, s in enumerate(cfg.segments) if s.name == cycle[0])
        issues.append(ConfigIssue(file, f"segments[{i}].exclude", "exclusion cycle: " + " -> ".join(cycle)
                                  + "; a segment cannot (indirectly) exclude itself"))
    return issues


def _exclusion_cycle(cfg: SegmentsConfig) -> list[str] | None:
    graph: dict[str, list[str]] = {}
    for s in cfg.segments:  # duplicates (reported elsewhere) pool their exclusions
        graph.setdefault(s.name, []).extend(o for o in s.exclude if o != s.name)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in graph.get(n, []):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m in graph and m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in graph:
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


class Catalog(_Strict):
    sources: dict[str, SourceSpec]

    @model_validator(mode="after")
    def _null_ids_for_events(self) -> Catalog:
        others = [n for n, spec in self.sources.items() if n != "events" and spec.null_ids == "drop"]
        if others:  # a profile or an identity link without its id is no row to leave out in silence
            raise ValueError(f"`null_ids: drop` is for the events source only (anonymous visits); found under "
                             f"{', '.join(others)}: fix the rows without an id there, or remove the setting")
        others = [n for n, spec in self.sources.items() if n != "events" and spec.future_events == "drop"]
        if others:
            raise ValueError(f"`future_events: drop` is for the events source only; found under {', '.join(others)}: "
                             "remove the setting (a profile time after now is a warning there already)")
        return self


class Roles(_Strict):
    event_roles: dict[Role, list[str]]
    ignore: list[str] = []
    # an event name neither mapped nor ignored: refuse the run (default), or warn and leave it out
    unknown_events: Literal["refuse", "warn"] = "refuse"

    @model_validator(mode="after")
    def _one_role_per_name(self) -> Roles:
        seen: dict[str, str] = {}
        for role, names in self.event_roles.items():
            for n in names:
                if n in seen:
                    raise ValueError(f"event name {n!r} is mapped to two roles, {seen[n]!r} and {role!r}")
                seen[n] = role
        return self

    @field_validator("ignore", mode="before")
    @classmethod
    def _nothing_is_none(cls, ignore: Any) -> Any:
        return [] if ignore is None else ignore  # `ignore:` with every line under it commented out

    @field_validator("ignore")
    @classmethod
    def _not_mapped(cls, ignore: list[str], info: ValidationInfo) -> list[str]:
        role_of = {n: role for role, names in (info.data.get("event_roles") or {}).items() for n in names}
        both = [n for n in ignore if n in role_of]
        if both:
            raise ValueError(f"{', '.join(f'{n!r} (mapped to {role_of[n]!r})' for n in both)} "
                             f"{'are' if len(both) > 1 else 'is'} also mapped to a role under event_roles; "
                             "keep each event name in one place")
        return ignore


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else f"{self.file}: {self.message}"


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


@dataclass(frozen=True)
class Config:
    project_dir: Path
    profile: str
    settings: Settings
    catalog: Catalog
    roles: Roles
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    bands: BandsConfig = field(default_factory=BandsConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    files: tuple[Path, ...] = field(default=())

    @property
    def workspace(self) -> Path:
        env = os.environ.get("DYNSEG_WORKSPACE")
        ws = Path(env) if env else Path(self.settings.workspace)
        ws = ws if ws.is_absolute() else self.project_dir / ws
        given = ("the environment variable DYNSEG_WORKSPACE" if env else
                 f"workspace: in {self.origin('project.yaml', 'workspace')}")  # (a profile's, an override's)
        if ws.exists() and not ws.is_dir():  # every command would fail on a path inside it, saying it backwards
            raise ValueError(f"the workspace {ws} is a file, not a folder; it comes from {given}. Point it at a "
                             "folder (dynseg makes it when missing)")
        if not ws.exists() and not ws.parent.is_dir():  # a typo in the path: a new, empty workspace made in silence
            raise ValueError(f"the workspace {ws} does not exist, nor the folder {ws.parent} it would be made in; it "
                             f"comes from {given}. Fix the path, or make {ws.parent} first (dynseg makes the "
                             "workspace itself, not the folders around it)")
        return ws

    @property
    def role_of(self) -> dict[str, str]:
        """The shop's event name -> dynseg role."""
        return {n: role for role, names in self.roles.event_roles.items() for n in names}

    def source_specs(self) -> dict[str, SourceSpec]:
        """Catalog sources with ``{workspace}`` expanded in paths."""
        return {
            name: spec.model_copy(update={"path": spec.path.replace("{workspace}", str(self.workspace))})
            for name, spec in self.catalog.sources.items()
        }

    def origin(self, file: str, *key: str) -> str:
        """The file (relative to the project) whose value of ``key`` in ``file`` (``training.yaml``)
        is in force: the last of its layers (``configs/<file>``, the profile's for project.yaml,
        ``configs/local/<file>``) that sets it; ``configs/<file>`` when none does."""
        layers = [p for p in self.files if p.name == file or (file == "project.yaml" and p.parent.name == "profiles")]
        for path in reversed(layers):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            for k in key:
                data = data.get(k) if isinstance(data, dict) else None
            if data is not None:
                return _rel(path, self.project_dir)
        return f"configs/{file}"

    def resolved(self) -> dict[str, Any]:
        """The full resolved config, for logging with a run."""
        return {
            "profile": self.profile,
            "settings": self.settings.model_dump(),
            "catalog": self.catalog.model_dump(),
            "roles": self.roles.model_dump(),
            "features": self.features.model_dump(),
            "labels": self.labels.model_dump(),
            "training": self.training.model_dump(),
            "bands": self.bands.model_dump(exclude_none=True),
            "segments": self.segments.model_dump(),
            "scoring": self.scoring.model_dump(),
            "monitoring": self.monitoring.model_dump(),
        }


def find_project_dir(start: Path | None = None) -> Path:
    env = os.environ.get("DYNSEG_PROJECT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        # a project whose catalog.yaml went missing is still this project (load_config says the file
        # is missing): walking on, a project folder inside another would quietly use the outer one
        if (d / "configs" / "catalog.yaml").is_file() or (d / "configs" / "roles.yaml").is_file():
            return d
    raise ConfigError([ConfigIssue(str(here), "", "no configs/catalog.yaml here or in any parent folder; "
                                   "run dynseg from the project folder, pass --project DIR or set DYNSEG_PROJECT (to start a "
                                   "project on your files: dynseg init FOLDER --events FILE)")])


def load_config(project_dir: Path | None = None, profile: str | None = None) -> Config:
    """Load and check every config file; raise :class:`ConfigError` listing all problems."""
    project_dir = (project_dir or find_project_dir()).resolve()
    profile = profile or os.environ.get("DYNSEG_PROFILE") or "local"
    cfg_dir = project_dir / "configs"
    if not cfg_dir.is_dir():  # not a project at all: one line naming the folder, not every file missing in it
        what = "does not exist" if not project_dir.exists() else "is not a folder" if not project_dir.is_dir() \
            else "has no configs/ folder"
        raise ConfigError([ConfigIssue(str(project_dir), "", f"{what}; expected a dynseg project folder (one "
                                       "with configs/catalog.yaml). Check --project or DYNSEG_PROJECT, or run "
                                       "dynseg from the project folder (to start a project on your files: dynseg "
                                       "init FOLDER --events FILE)")])
    issues: list[ConfigIssue] = []
    files: list[Path] = []

    def layered(name: str, extra: list[Path]) -> tuple[dict | None, dict[tuple, str]]:
        """The file's layers merged; None when one of them is unreadable (its error is already in
        ``issues``: checking what is left would add misleading "required key is missing" lines)."""
        data: dict = {}
        origin: dict[tuple, str] = {}
        readable = True
        for path in [cfg_dir / name, *extra, cfg_dir / "local" / name]:
            yml = path.with_suffix(".yml")
            if yml.is_file():  # read by nobody: its settings would be ignored in silence
                issues.append(ConfigIssue(_rel(yml, project_dir), "", f"dynseg reads {path.name} (.yaml), not .yml: "
                                          + (f"merge it into {path.name} and remove it" if path.is_file()
                                             else f"rename it to {path.name}")))
            if not path.is_file():
                if path.exists():  # a folder where the file belongs: not "missing", defaults used in silence
                    issues.append(ConfigIssue(_rel(path, project_dir), "", "is a folder; expected a YAML file"))
                    readable = False
                continue
            files.append(path)
            loaded = _read_yaml(path, project_dir, issues)
            if loaded is None:
                readable = False
            else:
                _merge(data, loaded, _rel(path, project_dir), origin, ())
        return (data if readable else None), origin

    profile_file = cfg_dir / "profiles" / f"{profile}.yaml"
    if not profile_file.is_file() and not profile_file.with_suffix(".yml").is_file():  # (a .yml one is named below)
        available = sorted(p.stem for p in (cfg_dir / "profiles").glob("*.yaml"))
        issues.append(ConfigIssue(_rel(profile_file, project_dir), "",
                                  f"profile {profile!r} does not exist; expected one of {available}"))
    settings_raw, settings_origin = layered("project.yaml", [profile_file])
    catalog_raw, catalog_origin = layered("catalog.yaml", [])
    roles_raw, roles_origin = layered("roles.yaml", [])
    if not (cfg_dir / "catalog.yaml").is_file():
        issues.append(ConfigIssue(_rel(cfg_dir / "catalog.yaml", project_dir), "", "file is missing"))
        catalog_raw = None  # its keys would be reported missing too
    if not (cfg_dir / "roles.yaml").is_file():
        issues.append(ConfigIssue(_rel(cfg_dir / "roles.yaml", project_dir), "", "file is missing"))
        roles_raw = None

    settings = _parse(Settings, settings_raw, settings_origin, "configs/project.yaml", issues)
    catalog = _parse(Catalog, catalog_raw, catalog_origin, "configs/catalog.yaml", issues)
    roles = _parse(Roles, roles_raw, roles_origin, "configs/roles.yaml", issues)
    optional, origins = {}, {}
    for key, model in (("features", FeaturesConfig), ("labels", LabelsConfig), ("training", TrainingConfig),
                       ("bands", BandsConfig), ("segments", SegmentsConfig), ("scoring", ScoringConfig),
                       ("monitoring", MonitoringConfig)):
        raw, origins[key] = layered(f"{key}.yaml", [])
        optional[key] = _parse(model, raw, origins[key], f"configs/{key}.yaml", issues)
    # a file under configs/local/ that no layer reads (label.yaml, Labels.yaml): its settings would
    # be ignored in silence
    read = {"project.yaml", "catalog.yaml", "roles.yaml", *(f"{k}.yaml" for k in optional)}
    local = cfg_dir / "local"
    if local.exists() and not local.is_dir():
        issues.append(ConfigIssue(_rel(local, project_dir), "", "is a file; expected a folder of override files "
                                  f"named as configs/ names them ({', '.join(sorted(read))})"))
    for path in sorted(local.glob("*")) if local.is_dir() else []:
        if path.suffix in (".yaml", ".yml") and path.name not in read and path.with_suffix(".yaml").name not in read:
            close = difflib.get_close_matches(path.name.lower(), sorted(read), n=1, cutoff=0.6)
            issues.append(ConfigIssue(_rel(path, project_dir), "", "is read by nobody: an override file takes the "
                                      "name of the file it overrides" + (f"; did you mean {close[0]}?" if close else
                                                                         f" ({', '.join(sorted(read))})")))
    if optional["segments"] is not None:
        # each named in the file its key came from (configs/local/segments.yaml replaces a list whole)
        issues += [replace(i, file=origins["segments"].get((i.key.split("[")[0],), i.file))
                   for i in segment_issues(optional["segments"])]
    if issues:
        raise ConfigError(issues)
    return Config(project_dir, profile, settings, catalog, roles, files=tuple(files), **optional)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (plain YAML keeps the last,
    silently: ``horizon: 30d`` then ``horizon: 60d`` would train on 60 days)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: the merged keys may be overridden
            continue
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value (text or a number), not a list or mapping",
                                                    key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line {seen[key] + 1}); keep one", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(path: Path, root: Path, issues: list[ConfigIssue]) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        issues.append(ConfigIssue(_rel(path, root), f"line {line}", f"is not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                                  "save the file as UTF-8"))
        return None
    except OSError as e:
        issues.append(ConfigIssue(_rel(path, root), "", f"cannot be read: {e.strerror or e}; check its permissions"))
        return None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        # PyYAML's context names where the unclosed bracket or quote began, often far above the
        # line where parsing failed (the end of the file, the next key)
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        began = (f" ({context} on line {context_mark.line + 1})"
                 if context and context_mark and mark and context_mark.line != mark.line else "")
        problem = str(getattr(e, "problem", e))
        issues.append(ConfigIssue(_rel(path, root), where, f"is not valid YAML: {problem}{began}{_yaml_hint(problem)}"))
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(_rel(path, root), "", f"expected a mapping of keys; found {type(data).__name__}"))
        return None
    return data


def _yaml_hint(problem: str) -> str:
    """The fix for PyYAML's commonest complaints, which name the parser's state, not the mistake."""
    if "\\t" in problem or "\t" in problem:  # PyYAML writes the tab escaped: '\\t'
        return "; indent with spaces, not tabs"
    if problem.startswith("mapping values are not allowed"):
        return "; a value holding ': ' (a time, a note) needs quotes: key: 'a: b'"
    if problem.startswith("expected <block end>") or "found '<scalar>'" in problem:
        return "; a value starting with { or [ that is text (a path like {workspace}/data) needs quotes"
    return ""


def _merge(base: dict, over: dict, src: str, origin: dict[tuple, str], prefix: tuple) -> None:
    for k, v in over.items():
        key = (*prefix, k)
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v, src, origin, key)
        else:
            base[k] = v
            origin[key] = src
            _mark(v, src, origin, key)


def _mark(value: Any, src: str, origin: dict[tuple, str], key: tuple) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            origin[(*key, k)] = src
            _mark(v, src, origin, (*key, k))


def _parse(model: type[BaseModel], raw: dict | None, origin: dict[tuple, str], default_file: str,
           issues: list[ConfigIssue]):
    if raw is None:  # unreadable or missing: already reported
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            # the files that set the key or keys under it: a check across keys (churn's population
            # and horizon, the catalog's sources) names a key that several layers may have set, and
            # the override among them is where the fix goes (the base file was named, unchanged)
            under = sorted({f for k, f in origin.items() if k[:len(loc)] == loc}, key=lambda f: f == default_file)
            file = (" and ".join(under) if under else
                    next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), default_file))
            key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")  # segments[6].holdout
            said = _describe(err, _model_at(model, err["loc"][:-1]))
            item = _named_item(raw, err["loc"])
            if item is not None and repr(item) not in said:  # segments[13] read as "which one?"
                said = f"segment {item!r}: {said}" if err["loc"][0] == "segments" else f"{item!r}: {said}"
            issues.append(ConfigIssue(file, key or "(top level)", said))
        return None


def _named_item(raw: Any, loc: tuple) -> str | None:
    """The ``name`` of the list item an error's path runs through (``segments[13]``), if it has
    one and the error is not about the name itself."""
    current, found = raw, None
    for i, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
            if isinstance(current, dict):  # (a list inside it, exclude: [...], keeps the segment's name)
                name = current.get("name")
                found = name if isinstance(name, str) and loc[i + 1:] != ("name",) else None
        else:
            break
    return found


def _snake(text: str) -> str:
    """``text`` as lower_snake_case (a suggestion for a name that is not)."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name if re.match(_SNAKE, name) else f"s_{name}".rstrip("_")


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config model at ``loc`` (a path of keys and list indexes) whose key an error names: its
    keys give a did-you-mean, its fields' types the form a value takes; None where the path
    leads to no model."""
    import typing

    current: Any = model
    any_key = False  # the previous part was a mapping's: this part is one of its keys, any name
    for part in loc:
        if isinstance(part, int) or any_key:
            any_key = False
            continue  # a list index or a mapping's key: the items have the same model
        if not _is_model(current) or part not in current.model_fields:
            return None
        current = current.model_fields[part].annotation
        while typing.get_origin(current) is not None:  # list[X], dict[str, X], X | None, Annotated[X, ...]: to X
            any_key = any_key or typing.get_origin(current) is dict
            args = [a for a in typing.get_args(current) if a is not type(None)]
            current = next((a for a in args if _is_model(a)), args[0] if args else None)
    return current if _is_model(current) else None


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _is_duration(model: type[BaseModel] | None, key: str) -> bool:
    """Whether ``key`` of ``model`` holds a duration (``30d``, ``8w``), by its validator."""
    field_ = model.model_fields.get(key) if model is not None else None
    return field_ is not None and any(getattr(m, "func", None) in (_duration, _positive_duration)
                                      for m in field_.metadata)


def _describe(err: dict, model: type[BaseModel] | None = None) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        import difflib

        keys = list(model.model_fields) if model is not None else []
        close = difflib.get_close_matches(str(err["loc"][-1]), keys, n=1, cutoff=0.75)
        hint = f"did you mean `{close[0]}`?" if close else "check the spelling against the README"
        return f"unknown key (found {err['input']!r}); {hint}"
    if kind == "literal_error":
        return f"expected {msg.removeprefix('Input should be ')}; found {err['input']!r}"
    key = str(err["loc"][-1]) if err["loc"] else ""
    if kind == "string_type" and _is_duration(model, key) and isinstance(err.get("input"), (int, float)):
        return f"expected a duration with its unit such as {err['input']}d or 8w; found {err['input']!r}"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == _SNAKE and isinstance(err.get("input"), str):
        what = " (it names the export file and is written in rules)" if key == "name" else ""
        return (f"expected lower_snake_case: a lowercase letter, then lowercase letters, digits and _{what}, say "
                f"{_snake(err['input'])!r}; found {err['input']!r}")
    if kind == "string_pattern_mismatch" and key == "memory_limit":
        return f"expected a size such as 2GB or 512MB; found {err['input']!r}"
    if kind in ("string_pattern_mismatch", "string_too_long") and key == "currency":
        return (f"expected a currency symbol such as € or $, or a code such as EUR (up to 5 characters, no digits, "
                f"spaces or signs); found {err['input']!r}")
    if kind == "string_type" and isinstance(err.get("input"), bool):
        # YAML reads off, no, yes, on, true and false without quotes as booleans
        words = "off/no/false" if err["input"] is False else "on/yes/true"
        return (f"expected text; found {err['input']!r}, what YAML makes of {words} without quotes: put the "
                "name in quotes as written (say 'off', or 'Yes')")
    if err.get("input", 0) is None and kind in ("list_type", "dict_type", "model_type", "model_attributes_type"):
        return "is empty (the key with nothing after it); give it a value, or remove the key for its default"
    text = msg.removeprefix("Value error, ")
    return f"{text[0].lower()}{text[1:]}; found {err['input']!r}" if "input" in err and kind != "value_error" else text
