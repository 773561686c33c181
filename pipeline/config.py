"""The one config loader: YAML files under ``configs/`` into typed settings.

Files: ``project.yaml`` (settings), ``catalog.yaml`` (sources), ``roles.yaml`` (event names ->
roles). A profile (``profiles/<name>.yaml``) overrides settings; personal overrides and
credentials live in the git-ignored ``configs/local/`` (same file names, merged last). Every error
in every file is reported at once, naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.asof import parse_duration
from features.contract import ROLES
from features.sources import SourceSpec

Role = Literal[ROLES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Freshness(_Strict):
    max_lag_days: float = Field(3.0, ge=0, description="newest event may be at most this old at as_of")
    action: Literal["refuse", "warn"] = "refuse"


class IdentitySettings(_Strict):
    max_ids_per_identifier: int = Field(20, ge=2, description="identifiers shared by more ids are not trusted")


class Settings(_Strict):
    workspace: str = ".dynseg"
    engine: Literal["duckdb", "spark"] = "duckdb"
    tracking_uri: str | None = None
    threads: int | None = Field(None, ge=1)
    freshness: Freshness = Freshness()
    identity: IdentitySettings = IdentitySettings()


def _duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_duration)]


class FeaturesConfig(_Strict):
    """``configs/features.yaml``: what the customer_features set computes."""

    windows_days: list[Annotated[int, Field(ge=1)]] = [7, 30, 90, 365]
    window_roles: list[Role] = ["purchase", "email_open", "email_click", "page_view", "add_to_cart"]
    categorical_attributes: Literal["auto"] | list[str] = "auto"
    max_categories: int = Field(50, ge=2)


class LabelConfig(_Strict):
    horizon: Duration
    population: Literal["known", "active"] = "known"
    active_window: Duration = "180d"


class LabelsConfig(_Strict):
    """``configs/labels.yaml``: the two targets."""

    purchase: LabelConfig = LabelConfig(horizon="30d")
    churn: LabelConfig = LabelConfig(horizon="60d", population="active")

    @model_validator(mode="after")
    def _churn_is_over_active(self) -> LabelsConfig:
        if self.churn.population != "active":
            raise ValueError("churn is defined over customers active at the cutoff: churn.population must be 'active'")
        return self


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

    @model_validator(mode="after")
    def _exactly_one_bound(self) -> Criterion:
        bounds = [k for k in ("min", "max", "min_over_best_baseline", "max_over_best_baseline") if getattr(self, k) is not None]
        if len(bounds) != 1:
            raise ValueError(f"a criterion needs exactly one of min, max, min_over_best_baseline, max_over_best_baseline; found {bounds or 'none'}")
        return self


class RegistryConfig(_Strict):
    experiment: str = "dynseg"
    names: dict[Literal["purchase", "churn"], str] = {"purchase": "dynseg-purchase", "churn": "dynseg-churn"}


class TrainingConfig(_Strict):
    """``configs/training.yaml``: how the stacked training set is cut, the model, the gate."""

    snapshots: int = Field(6, ge=3)
    step: Duration = "30d"
    min_history: Duration = "90d"
    min_class_examples: int = Field(50, ge=1)
    bootstrap_samples: int = Field(200, ge=10)
    model: ModelParams = ModelParams()
    registry: RegistryConfig = RegistryConfig()
    validation_criteria: list[Criterion] = [
        Criterion(metric="roc_auc", min_over_best_baseline=0.0),
        Criterion(metric="brier", max_over_best_baseline=0.0),
    ]


class Catalog(_Strict):
    sources: dict[str, SourceSpec]


class Roles(_Strict):
    event_roles: dict[Role, list[str]]
    ignore: list[str] = []

    @model_validator(mode="after")
    def _one_role_per_name(self) -> Roles:
        seen: dict[str, str] = {}
        for role, names in self.event_roles.items():
            for n in names:
                if n in seen:
                    raise ValueError(f"event name {n!r} is mapped to two roles, {seen[n]!r} and {role!r}")
                seen[n] = role
        return self


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
    files: tuple[Path, ...] = field(default=())

    @property
    def workspace(self) -> Path:
        env = os.environ.get("DYNSEG_WORKSPACE")
        ws = Path(env) if env else Path(self.settings.workspace)
        return ws if ws.is_absolute() else self.project_dir / ws

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
        }


def find_project_dir(start: Path | None = None) -> Path:
    env = os.environ.get("DYNSEG_PROJECT")
    if env:
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "configs" / "catalog.yaml").is_file():
            return d
    raise ConfigError([ConfigIssue(str(here), "", "no configs/catalog.yaml here or in any parent folder; "
                                   "run dynseg from the project folder or set DYNSEG_PROJECT")])


def load_config(project_dir: Path | None = None, profile: str | None = None) -> Config:
    """Load and check every config file; raise :class:`ConfigError` listing all problems."""
    project_dir = (project_dir or find_project_dir()).resolve()
    profile = profile or os.environ.get("DYNSEG_PROFILE") or "local"
    cfg_dir = project_dir / "configs"
    issues: list[ConfigIssue] = []
    files: list[Path] = []

    def layered(name: str, extra: list[Path]) -> tuple[dict, dict[tuple, str]]:
        data: dict = {}
        origin: dict[tuple, str] = {}
        for path in [cfg_dir / name, *extra, cfg_dir / "local" / name]:
            if not path.is_file():
                continue
            files.append(path)
            loaded = _read_yaml(path, project_dir, issues)
            if loaded is not None:
                _merge(data, loaded, _rel(path, project_dir), origin, ())
        return data, origin

    profile_file = cfg_dir / "profiles" / f"{profile}.yaml"
    if not profile_file.is_file():
        available = sorted(p.stem for p in (cfg_dir / "profiles").glob("*.yaml"))
        issues.append(ConfigIssue(_rel(profile_file, project_dir), "",
                                  f"profile {profile!r} does not exist; expected one of {available}"))
    settings_raw, settings_origin = layered("project.yaml", [profile_file])
    catalog_raw, catalog_origin = layered("catalog.yaml", [])
    roles_raw, roles_origin = layered("roles.yaml", [])
    if not (cfg_dir / "catalog.yaml").is_file():
        issues.append(ConfigIssue(_rel(cfg_dir / "catalog.yaml", project_dir), "", "file is missing"))
    if not (cfg_dir / "roles.yaml").is_file():
        issues.append(ConfigIssue(_rel(cfg_dir / "roles.yaml", project_dir), "", "file is missing"))

    settings = _parse(Settings, settings_raw, settings_origin, "configs/project.yaml", issues)
    catalog = _parse(Catalog, catalog_raw, catalog_origin, "configs/catalog.yaml", issues)
    roles = _parse(Roles, roles_raw, roles_origin, "configs/roles.yaml", issues)
    optional = {}
    for key, model in (("features", FeaturesConfig), ("labels", LabelsConfig), ("training", TrainingConfig)):
        raw, origin = layered(f"{key}.yaml", [])
        optional[key] = _parse(model, raw, origin, f"configs/{key}.yaml", issues)
    if issues:
        raise ConfigError(issues)
    return Config(project_dir, profile, settings, catalog, roles, files=tuple(files), **optional)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _read_yaml(path: Path, root: Path, issues: list[ConfigIssue]) -> dict | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        issues.append(ConfigIssue(_rel(path, root), where, f"is not valid YAML: {getattr(e, 'problem', e)}"))
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(_rel(path, root), "", f"expected a mapping of keys; found {type(data).__name__}"))
        return None
    return data


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


def _parse(model: type[BaseModel], raw: dict, origin: dict[tuple, str], default_file: str, issues: list[ConfigIssue]):
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        for err in e.errors():
            loc = tuple(str(p) for p in err["loc"])
            file = next((origin[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in origin), default_file)
            issues.append(ConfigIssue(file, ".".join(loc) or "(top level)", _describe(err)))
        return None


def _describe(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return f"unknown key (found {err['input']!r}); check the spelling against the README"
    if kind == "literal_error":
        return f"expected {msg.removeprefix('Input should be ')}; found {err['input']!r}"
    text = msg.removeprefix("Value error, ")
    return f"{text[0].lower()}{text[1:]}; found {err['input']!r}" if "input" in err and kind != "value_error" else text
