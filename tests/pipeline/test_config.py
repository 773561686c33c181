from pathlib import Path

import pytest

from features.contract import ROLES
from pipeline.config import ConfigError, load_config


def test_repo_configs_load(project):
    cfg = load_config(project.root)
    assert cfg.profile == "local"
    assert cfg.workspace == project.root / ".dynseg"
    assert cfg.role_of["order_completed"] == "purchase"
    assert cfg.source_specs()["events"].path == f"{project.root}/.dynseg/data/events.parquet"


def _config_error(project) -> ConfigError:
    """The configuration error ``project`` must raise."""
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    return e.value


def _write(project, rel: str, text: str) -> None:
    path: Path = project.root / "configs" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _refused(project, profile: str | None = None, **files: str) -> str:
    """The configuration error's text, once ``files`` (configs/-relative path -> text) are written."""
    for rel, text in files.items():
        _write(project, rel, text)
    with pytest.raises(ConfigError) as e:
        load_config(project.root, profile=profile)
    return str(e.value)


def test_every_error_is_reported_with_file_key_expected_and_found(project):
    _write(project, "catalog.yaml", "sources:\n  events:\n    format: xlsx\n    path: e.xlsx\n    colour: red\n    delimeter: ';'\n")
    _write(project, "project.yaml", "engine: oracle\nfreshness:\n  max_lag_days: -2\nmemory_limit: lots\ncurrency: 10 EUR\n")
    _write(project, "roles.yaml", "event_roles:\n  purchse: [order]\n")
    _write(project, "features.yaml", "window_days: [7, 30]\n")
    _write(project, "labels.yaml", "purchase:\n  horizon: 30\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "configs/catalog.yaml: sources.events.format: expected 'parquet', 'csv' or 'duckdb'; found 'xlsx'" in text
    assert "configs/catalog.yaml: sources.events.colour: unknown key (found 'red'); check the spelling" in text
    assert "configs/project.yaml: engine: expected 'duckdb' or 'spark'; found 'oracle'" in text
    assert "configs/project.yaml: freshness.max_lag_days:" in text and "found -2" in text
    assert "configs/roles.yaml: event_roles.purchse" in text
    # the close key at its level, the form a value takes
    assert "features.yaml: window_days: unknown key (found [7, 30]); did you mean `windows_days`?" in text, text
    assert "sources.events.delimeter: unknown key (found ';'); did you mean `delimiter`?" in text, text
    assert "purchase.horizon: expected a duration with its unit such as 30d or 8w; found 30" in text, text
    assert "memory_limit: expected a size such as 2GB or 512MB; found 'lots'" in text, text
    assert ("currency: expected a currency symbol such as € or $, or a code such as EUR (up to 5 characters, no digits, "
            "spaces or signs); found '10 EUR'") in text, text
    assert len(e.value.issues) == 10


def test_a_window_longer_than_any_history_is_refused_by_the_config(project):
    _write(project, "features.yaml", "windows_days: [7, 99999999999]\n")  # beyond any history: refused here
    with pytest.raises(ConfigError, match=r"windows_days\[1\]: .*less than or equal to 36500"):
        load_config(project.root)


def test_an_unclosed_bracket_names_the_line_it_opened_on(project):
    _write(project, "features.yaml", "windows_days: [7, 30\nwindow_roles:\n  - purchase\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert "(while parsing a flow sequence on line 1)" in str(e.value), str(e.value)


def test_yaml_syntax_error_and_a_key_given_twice_name_the_line(project):
    _write(project, "roles.yaml", "event_roles:\n  purchase: [order\n")
    _write(project, "labels.yaml", "purchase:\n  horizon: 30d\n  horizon: 60d\n")  # plain YAML keeps the last
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert "configs/roles.yaml: line" in str(e.value)
    assert "not valid YAML" in str(e.value)
    assert "configs/labels.yaml: line 3, column 3: is not valid YAML: key 'horizon' is given twice (first on line 2)" in str(e.value)


def test_an_unreadable_or_missing_file_is_one_error_not_a_list_of_missing_keys(project):
    catalog = (project.root / "configs" / "catalog.yaml").read_text()
    _write(project, "catalog.yaml", catalog + "\nsources:\n  events: {}\n")  # a required top-level key twice
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert [i.message for i in e.value.issues] == [
        f"is not valid YAML: key 'sources' is given twice (first on line {catalog.splitlines().index('sources:') + 1}); keep one"]
    (project.root / "configs" / "catalog.yaml").unlink()
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert [(i.file, i.message) for i in e.value.issues] == [("configs/catalog.yaml", "file is missing")]


def test_name_mapped_to_two_roles_is_refused(project):
    _write(project, "roles.yaml", "event_roles:\n  purchase: [order]\n  refund: [order]\n")
    with pytest.raises(ConfigError, match="'order' is mapped to two roles"):
        load_config(project.root)


def test_a_name_both_mapped_and_ignored_is_refused(project):
    _write(project, "roles.yaml", "event_roles:\n  purchase: [order, sale]\nignore: [order, heartbeat]\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert ("configs/roles.yaml: ignore: 'order' (mapped to 'purchase') is also mapped to a role under "
            "event_roles; keep each event name in one place") in str(e.value), str(e.value)


def test_a_window_or_window_role_given_twice_is_refused(project):
    _write(project, "features.yaml", "windows_days: [7, 30, 30, 90]\nwindow_roles: [purchase, purchase, email_open]\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "configs/features.yaml: windows_days: 30 given more than once; list each once" in text, text
    assert "configs/features.yaml: window_roles: purchase given more than once; list each once" in text, text
    # with a bad item beside the repeat, both at once (the repeat came only after the item was fixed)
    _write(project, "features.yaml", "windows_days: [7, 7, 0]\nwindow_roles: [purchase, purchase, email_opn]\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert [str(i) for i in e.value.issues] == [
        "configs/features.yaml: windows_days[2]: input should be greater than or equal to 1; found 0",
        "configs/features.yaml: windows_days: 7 given more than once; list each once",
        "configs/features.yaml: window_roles[2]: expected " + ", ".join(f"'{r}'" for r in ROLES[:-1]) + f" or '{ROLES[-1]}'; found 'email_opn'",
        "configs/features.yaml: window_roles: purchase given more than once; list each once"]
    # items of any YAML shape (a list in the list is no window, and no crash); 7 and "7" are one window
    _write(project, "features.yaml", "windows_days: [[7], 7, 7]\nwindow_roles: [purchase]\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    assert [str(i) for i in e.value.issues] == [
        "configs/features.yaml: windows_days[0]: input should be a valid integer; found [7]",
        "configs/features.yaml: windows_days: 7 given more than once; list each once"]
    _write(project, "features.yaml", "windows_days: [7, '7']\n")
    with pytest.raises(ConfigError, match="windows_days: 7 given more than once"):
        load_config(project.root)


@pytest.mark.parametrize("make", ["nothing", "empty folder", "a file"])
def test_a_project_folder_that_is_not_one_is_named_in_one_line(tmp_path, make):
    folder = tmp_path / "no-such-project"
    if make == "empty folder":
        folder.mkdir()
    elif make == "a file":
        folder.write_text("x")
    with pytest.raises(ConfigError) as e:
        load_config(folder)
    assert len(e.value.issues) == 1 and str(folder) in str(e.value)
    assert "expected a dynseg project folder (one with configs/catalog.yaml)" in str(e.value)
    assert {"nothing": "does not exist", "empty folder": "has no configs/ folder",
            "a file": "is not a folder"}[make] in str(e.value)


def test_unknown_profile_lists_available(project):
    with pytest.raises(ConfigError, match=r"profile 'prod' does not exist; expected one of \['local'"):
        load_config(project.root, profile="prod")


def test_profile_and_local_overrides_are_layered_and_errors_name_the_overriding_file(project):
    _write(project, "profiles/big.yaml", "threads: 2\n")
    _write(project, "local/project.yaml", "workspace: /tmp/elsewhere\n")
    cfg = load_config(project.root, profile="big")
    assert cfg.settings.threads == 2
    assert cfg.workspace == Path("/tmp/elsewhere")
    assert cfg.settings.engine == "duckdb"  # untouched keys come from project.yaml
    _write(project, "local/project.yaml", "identity:\n  max_ids_per_identifier: one\n")
    with pytest.raises(ConfigError, match=r"configs/local/project.yaml: identity.max_ids_per_identifier"):
        load_config(project.root)


def test_workspace_env_overrides(project, monkeypatch, tmp_path):
    monkeypatch.setenv("DYNSEG_WORKSPACE", str(tmp_path / "ws"))
    assert load_config(project.root).workspace == tmp_path / "ws"


def test_memory_limit_reaches_duckdb_and_a_bad_one_is_refused(project):
    from conftest import good_events
    from datetime import datetime

    from pipeline.jobs.data import load_validated

    project.write_events(good_events(3))
    _write(project, "project.yaml", "memory_limit: 512MB\n")
    data = load_validated(load_config(project.root), datetime(2026, 11, 28))
    limit = data.con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.replace(" ", "") in ("488.2MiB", "512.0MB", "488.2MB"), limit
    _write(project, "project.yaml", "memory_limit: lots\n")
    with pytest.raises(ConfigError, match=r"configs/project.yaml: memory_limit: .*lots"):
        load_config(project.root)


def test_zero_durations_and_bands_that_would_stay_empty_are_refused(project):
    _write(project, "training.yaml", "step: 0d\n")
    _write(project, "labels.yaml", "purchase:\n  horizon: 0w\n")
    _write(project, "bands.yaml", "purchase:\n  - {name: high, top_percent: 10}\n  - {name: medium, top_percent: 5}\n"
                                  "  - {name: low}\n")
    with pytest.raises(ConfigError) as e:
        load_config(project.root)
    text = str(e.value)
    assert "configs/training.yaml: step: expected a duration above zero such as 30d or 8w; found '0d'" in text
    assert "configs/labels.yaml: purchase.horizon: expected a duration above zero" in text
    assert "configs/bands.yaml: purchase:" in text and "'medium' (top_percent 5) comes after 'high' (top_percent 10)" in text
    assert len(e.value.issues) == 3


def test_durations_past_100_years_are_refused_when_the_config_loads(project):
    """5300w passed the config check and failed later as 'horizon None' (exit 2); a billion days
    crashed the loader with an OverflowError."""
    text = _refused(project, **{"labels.yaml": "purchase:\n  horizon: 5300w\n", "training.yaml": "min_history: 99999999999d\n"})
    assert "configs/labels.yaml: purchase.horizon: duration '5300w' is longer than 100 years" in text, text
    assert "configs/training.yaml: min_history: duration '99999999999d' is longer than 100 years" in text, text


def test_a_yml_file_is_named_not_ignored(project):
    """configs/project.yml, a local override or a profile saved as .yml: read by nobody, their
    settings were ignored in silence (the defaults ran)."""
    text = _refused(project, "nightly", **{"project.yml": "engine: oracle\n", "local/project.yml": "freshness: {max_lag_days: 30}\n",
                                           "profiles/nightly.yml": "threads: 2\n"})
    assert "configs/project.yml: dynseg reads project.yaml (.yaml), not .yml: merge it into project.yaml and remove it" in text
    assert "configs/local/project.yml: dynseg reads project.yaml (.yaml), not .yml: rename it to project.yaml" in text
    assert "configs/profiles/nightly.yml: dynseg reads nightly.yaml (.yaml), not .yml: rename it to nightly.yaml" in text
    assert "profile 'nightly' does not exist" not in text


def test_yaml_booleans_and_empty_sections_say_what_to_write(project):
    """`ignore: [off, NO]` read as booleans, and a section whose lines are all commented out read
    as null: pydantic's own words gave no fix."""
    roles = (project.root / "configs" / "roles.yaml").read_text()
    text = _refused(project, **{"roles.yaml": roles.replace("ignore: []", "ignore: [off, NO]"),
                                "project.yaml": "freshness:\n  # max_lag_days: 3\n"})
    assert "configs/roles.yaml: ignore[0]: expected text; found False" in text and "put the name in quotes" in text, text
    assert "configs/project.yaml: freshness: is empty (the key with nothing after it); give it a value, or remove the key" in text, text


def test_a_segments_error_from_the_local_file_names_the_local_file(project):
    text = _refused(project, **{"local/segments.yaml": "suppress_always: [no_email_consent, unsubscribd]\n"})
    assert "configs/local/segments.yaml: suppress_always[1]: 'unsubscribd' is not a defined segment" in text, text


def test_a_rule_error_from_the_local_segments_file_names_the_local_file(project, monkeypatch):
    """A rule's syntax is checked when the rules compile, after the files load: the error named
    configs/segments.yaml, which the user had not touched, for a rule of configs/local/segments.yaml."""
    import yaml
    from typer.testing import CliRunner

    from pipeline.cli import app
    from pipeline.synthetic import generate, write

    write(generate(50, seed=3), project.workspace / "data")  # `segments check` reads the data's columns
    doc = yaml.safe_load((project.root / "configs" / "segments.yaml").read_text())
    doc["segments"][0]["where"] = "purchase_band = 'high' AND recency_dayz < 30"
    _write(project, "local/segments.yaml", yaml.safe_dump(doc, sort_keys=False))
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(app, ["segments", "check"])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "configs/local/segments.yaml: segments[0].where:" in said and "recency_dayz" in said, said
    assert "configs/segments.yaml:" not in said, said


def test_a_project_without_its_catalog_is_not_swapped_for_the_folder_around_it(project, tmp_path, monkeypatch):
    """A project inside another: with its catalog.yaml deleted, dynseg quietly used the outer one."""
    from pipeline.config import find_project_dir

    inner = project.root / "shop"
    (inner / "configs").mkdir(parents=True)
    (inner / "configs" / "roles.yaml").write_text((project.root / "configs" / "roles.yaml").read_text())
    monkeypatch.delenv("DYNSEG_PROJECT", raising=False)
    assert find_project_dir(inner) == inner.resolve()
    with pytest.raises(ConfigError, match="configs/catalog.yaml: file is missing"):
        load_config(find_project_dir(inner))
    assert find_project_dir(project.root / "data") == project.root.resolve()  # a folder of a project: that project


def test_two_targets_in_one_registered_model_are_refused(project):
    """One name for both: a churn version could be promoted to purchase champion."""
    text = _refused(project, **{"training.yaml": "registry:\n  names: {purchase: dynseg-x, churn: dynseg-x}\n"})
    assert ("configs/training.yaml: registry.names: each target needs a registered model of its own; found churn, "
            "purchase all named 'dynseg-x'") in text, text


def test_outside_any_project_the_error_says_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DYNSEG_PROJECT", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        load_config()
    text = str(e.value)
    assert f"{tmp_path}: no configs/catalog.yaml here or in any parent folder" in text
    assert "pass --project DIR or set DYNSEG_PROJECT" in text and "dynseg init FOLDER --events FILE" in text


def test_config_files_that_cannot_be_read_or_values_of_another_kind_are_named(project):
    """A folder where a file belongs was taken as a missing file (defaults, in silence); bad UTF-8
    or an unreadable file gave an error without the file's name; ``true`` in windows_days was a
    1-day window; ``Auto`` gave two errors quoting pydantic; churn.population was reported at the
    file's top level."""
    folder = project.root / "configs" / "training.yaml"
    folder.unlink(missing_ok=True)
    folder.mkdir()
    (project.root / "configs" / "features.yaml").write_bytes(b"windows_days: [7]\nmax_categories: 5\xff\n")
    _write(project, "labels.yaml", "churn:\n  horizon: 60d\n  population: known\n")
    text = str(_config_error(project))
    assert "configs/training.yaml: is a folder; expected a YAML file" in text, text
    assert "configs/features.yaml: line 2: is not UTF-8 text (byte 0xff); save the file as UTF-8" in text, text
    assert "configs/labels.yaml: churn: churn is defined over customers active at the cutoff" in text, text
    folder.rmdir()

    _write(project, "features.yaml", "windows_days: [7, true]\ncategorical_attributes: 5\n")
    _write(project, "labels.yaml", "")
    e = _config_error(project)
    text = str(e)
    assert "windows_days[1]: expected a number of days such as 30; found true" in text, text
    assert "categorical_attributes: expected auto or a list of attribute names such as [country, plan]; found 5" in text
    assert len(e.issues) == 2
    _write(project, "features.yaml", "categorical_attributes: Auto\n")
    assert load_config(project.root).features.categorical_attributes == "auto"
    # the contract's fields are read by the feature set itself (listed, email_consent crashed
    # `features describe --columns`); a name listed twice is a slip, as a window given twice is
    _write(project, "features.yaml", "categorical_attributes: [tier, email_consent, signup_at]\n")
    text = str(_config_error(project))
    assert ("categorical_attributes: ['email_consent', 'signup_at'] are fields of the customers contract, which the "
            "feature set reads itself") in text, text
    _write(project, "features.yaml", "categorical_attributes: [tier, plan, tier]\n")
    assert "categorical_attributes: tier given more than once; list each once" in str(_config_error(project))


def test_the_currency_is_read_and_empty_means_none(project):
    assert load_config(project.root).settings.currency == ""  # the repo's `currency:` with nothing after it
    _write(project, "project.yaml", "currency: €\n")
    assert load_config(project.root).settings.currency == "€"


def test_yaml_flags_for_numbers_empty_exports_and_unread_override_files_are_refused(project):
    """Found editing the files by hand: `min_size_for_change: off` read as 0 (every size change
    checked: the opposite of off); `export_formats: []` wrote no segment file; an AUC floor of 75
    always alarmed; configs/local/label.yaml (for labels.yaml) was ignored in silence."""
    _write(project, "monitoring.yaml", "segment_health:\n  min_size_for_change: off\n  max_size_change: on\n"
                                       "quality:\n  auc_floor: {purchase: 75}\n")
    text = str(_config_error(project))
    assert "segment_health.min_size_for_change: expected a number; found false (YAML reads yes/no/on/off as " \
           "true/false): write the number" in text, text
    assert "segment_health.max_size_change: expected a number; found true" in text
    assert "quality.auc_floor.purchase" in text
    _write(project, "monitoring.yaml", "")
    _write(project, "scoring.yaml", "export_formats: []\n")
    assert "export_formats" in str(_config_error(project))
    _write(project, "scoring.yaml", "")
    _write(project, "local/label.yaml", "purchase:\n  horizon: 14d\n")
    text = str(_config_error(project))
    assert "configs/local/label.yaml: is read by nobody: an override file takes the name of the file it overrides; " \
           "did you mean labels.yaml?" in text, text
    (project.root / "configs" / "local" / "label.yaml").rename(project.root / "configs" / "local" / "labels.yaml")
    assert load_config(project.root).labels.purchase.horizon == "14d"


def test_a_check_across_keys_names_the_override_that_set_one_of_them(project):
    """churn's population set to known in configs/local/labels.yaml was blamed on configs/labels.yaml,
    which says active: editing it changed nothing."""
    _write(project, "local/labels.yaml", "churn:\n  population: known\n")
    text = str(_config_error(project))
    assert "configs/local/labels.yaml and configs/labels.yaml: churn: churn is defined over customers active" in text, text


def test_yaml_mistakes_are_told_their_fix():
    """PyYAML names its own state ("mapping values are not allowed here"), not the mistake."""
    from pipeline.config import _yaml_hint

    assert _yaml_hint("found character '\\t' that cannot start any token") == "; indent with spaces, not tabs"
    assert "needs quotes: key: 'a: b'" in _yaml_hint("mapping values are not allowed here")
    assert "{workspace}/data) needs quotes" in _yaml_hint("expected <block end>, but found '<scalar>'")
    assert _yaml_hint("found undefined alias 'x'") == ""


def test_a_tab_in_a_config_file_is_told_to_be_spaces(project):
    _write(project, "local/project.yaml", "freshness:\n\tmax_lag_days: 3\n")
    text = str(_config_error(project))
    assert "configs/local/project.yaml: line 2, column 1: is not valid YAML: found character '\\t' that cannot start " \
           "any token; indent with spaces, not tabs" in text, text


def test_a_holdout_written_as_a_percent_is_told_the_fraction():
    from pydantic import ValidationError

    from pipeline.config import SegmentsConfig

    seg = {"name": "a", "description": "d", "owner": "o", "kind": "rule", "where": "x > 1", "holdout": "10%"}
    with pytest.raises(ValidationError, match=r"expected a fraction from 0 to 0.5 \(0.1 for 10%\); found '10%'"):
        SegmentsConfig.model_validate({"segments": [seg]})
    assert SegmentsConfig.model_validate({"segments": [{**seg, "holdout": 0.1}]}).segments[0].holdout == 0.1


def test_a_misspelt_spark_master_is_named_as_such(project):
    """`lokal[2]` was taken for a cluster ("spark.staging_dir is not set"), or started a JVM that
    failed with a Java stack."""
    for bad in ("lokal[2]", "local[x]", "local[]", "local[2,]", "local[ 2]"):  # (local[x] went to Spark: 21 lines of Java)
        _write(project, "local/project.yaml", f"spark: {{master: '{bad}'}}\n")
        text = " ".join(str(_config_error(project)).split())
        assert "configs/local/project.yaml: spark.master: expected a Spark master URL: local[N] (this machine, N cores; " \
               f"local[*] for all of them), spark://HOST:PORT, k8s://HOST:PORT or yarn; found '{bad}'" in text, text
    for fine in ("local[2]", "local[*]", "local", "local[4, 3]", "local[*,2]", "local-cluster[2,1,1024]",
                 "spark://head:7077", "yarn", "k8s://https://api:6443"):
        _write(project, "local/project.yaml", f"spark: {{master: '{fine}'}}\n")
        assert load_config(project.root).settings.spark.master == fine
    # a nested conf value is one error at its key (it read as four, under .str, .int, .float and .bool)
    _write(project, "local/project.yaml", "spark: {master: 'local[2]', conf: {spark.foo: {a: 1}}}\n")
    text = " ".join(str(_config_error(project)).split())
    assert text.count("spark.foo") == 1 and "spark.conf: spark.foo: expected one value" in text, text
    assert ".str" not in text and ".bool" not in text


def test_a_segment_s_error_names_the_segment_and_a_name_s_form_in_plain_words(project):
    """'segments[13].name: string should match pattern ^[a-z][a-z0-9_]*$': the marketer had to count
    to 13 and read a regular expression."""
    import yaml

    doc = yaml.safe_load((project.root / "configs" / "segments.yaml").read_text())
    doc["segments"].append({**doc["segments"][-1], "name": "Big Spenders"})
    doc["segments"].append({**doc["segments"][-1], "name": "lapsed_vips", "holdout": "ten percent"})
    _write(project, "segments.yaml", yaml.safe_dump(doc, sort_keys=False))
    said = " ".join(str(_config_error(project)).split())
    n = len(doc["segments"])
    assert (f"segments[{n - 2}].name: expected lower_snake_case: a lowercase letter, then lowercase letters, digits and _ "
            "(it names the export file and is written in rules), say 'big_spenders'; found 'Big Spenders'") in said, said
    assert f"segments[{n - 1}].holdout: segment 'lapsed_vips': " in said and "'ten percent'" in said, said
