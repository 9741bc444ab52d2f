"""get_provider_info() against the schemas of the installed Airflow (a bad key breaks every
Airflow command), the entry points, and the [escalation] config reader. No server needed."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

import airflow
from airflow_escalation import airflow_config
from airflow_escalation.airflow_config import EscalationConfigError, load_settings
from airflow_escalation.get_provider_info import get_provider_info

AIRFLOW_DIR = Path(airflow.__file__).parent
DIST = "airflow-provider-escalation"


def _schema(name: str) -> dict:
    return json.loads((AIRFLOW_DIR / name).read_text())


def test_provider_info_is_valid_against_airflow_schema():
    info = get_provider_info()
    jsonschema.validate(info, _schema("provider_info.schema.json"))


def test_connection_form_is_declared_and_matches_the_hook_data():
    from airflow_escalation.hooks import connection_info

    (conn,) = get_provider_info()["connection-types"]
    assert conn == connection_info.CONNECTION_TYPE
    assert "conn-fields" in conn and "ui-field-behaviour" in conn


def test_connection_type_extras_are_valid_against_provider_yaml_schema():
    """``ui-field-behaviour``/``conn-fields`` are read from provider info by ProvidersManager;
    their schema lives in provider.yaml.schema.json (provider_info.schema.json lets them through
    unchecked), so check them against that one."""
    conn_schema = _schema("provider.yaml.schema.json")["properties"]["connection-types"]
    jsonschema.validate(get_provider_info()["connection-types"], conn_schema)


def test_package_name_is_the_normalised_distribution_name():
    info = get_provider_info()
    dist = metadata.distribution(DIST)
    assert info["package-name"] == dist.metadata["Name"].lower().replace("_", "-") == DIST
    assert info["versions"][0] == dist.version


def test_provider_info_imports_neither_the_hook_nor_airflow():
    """ProvidersManager calls get_provider_info() in every command: it must not need the hook
    (written separately) nor pull Airflow modules in, nor the package's engine, stores or
    schedulers (the package's ``__init__`` loads its public names lazily)."""
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "escalation"
    assert conn["hook-class-name"] == "airflow_escalation.hooks.escalation.EscalationHook"
    code = (
        "import sys, airflow_escalation.get_provider_info as m; m.get_provider_info(); "
        "bad = sorted(k for k in sys.modules if k in ('airflow', 'airflow_escalation.hooks.escalation') "
        "or k.startswith(('airflow.', 'airflow_escalation.core', 'airflow_escalation.stores', "
        "'airflow_escalation.scheduling', 'airflow_escalation.cli', 'sqlalchemy', 'pydantic', 'yaml'))); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_public_names_still_import_from_the_package():
    import airflow_escalation

    for name in airflow_escalation.__all__:
        assert getattr(airflow_escalation, name) is not None, name
    assert airflow_escalation.__version__ == metadata.version(DIST)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        airflow_escalation.NoSuchName  # noqa: B018


def test_project_metadata_for_the_providers_page():
    """The Providers page links the distribution's ``Documentation`` Project-URL; PyPI and the
    Airflow ecosystem page read the classifiers."""
    from airflow_escalation.get_provider_info import DOCS_URL

    meta = metadata.distribution(DIST).metadata
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL"))
    assert urls["Documentation"] == DOCS_URL
    assert set(urls) >= {"Documentation", "Changelog", "Source", "Issues"}
    assert "Framework :: Apache Airflow :: Provider" in meta.get_all("Classifier")
    assert get_provider_info()["integrations"][0]["external-doc-url"] == DOCS_URL
    description = get_provider_info()["config"]["escalation"]["description"]
    assert f"{DOCS_URL}service/" in description and "docs/service.md" not in description


def test_every_config_option_is_documented_with_a_default():
    options = get_provider_info()["config"]["escalation"]["options"]
    assert set(options) == set(airflow_config.DEFAULTS)
    for key, option in options.items():
        for field in ("description", "type", "example", "default", "version_added"):
            assert field in option, (key, field)
        assert option["description"]
        expected = airflow_config.DEFAULTS[key]
        assert (option["default"] or "") == expected, key


def test_plugin_is_registered_by_entry_point_only():
    from airflow_escalation.plugins.escalation_plugin import EscalationPlugin

    # listed in provider info too, Airflow would load it twice with eager provider discovery
    assert "plugins" not in get_provider_info()
    assert EscalationPlugin.name == "escalation"
    (app,) = EscalationPlugin.fastapi_apps
    assert app["url_prefix"] == "/escalation"


def test_db_manager_entry_names_the_db_manager():
    from importlib import import_module

    from airflow_escalation.stores.airflow_db import EscalationDBManager
    from airflow_escalation.stores.sql_schema import metadata as escalation_metadata

    (name,) = get_provider_info()["db-managers"]
    module, _, cls = name.rpartition(".")
    assert getattr(import_module(module), cls) is EscalationDBManager
    assert EscalationDBManager.metadata is escalation_metadata


def test_entry_points_are_installed():
    eps = metadata.distribution(DIST).entry_points
    by_group = {(ep.group, ep.name): ep.value for ep in eps}
    assert (
        by_group[("apache_airflow_provider", "provider_info")]
        == "airflow_escalation.get_provider_info:get_provider_info"
    )
    assert (
        by_group[("airflow.plugins", "escalation")] == "airflow_escalation.plugins.escalation_plugin:EscalationPlugin"
    )
    (provider_ep,) = metadata.distribution(DIST).entry_points.select(group="apache_airflow_provider")
    assert provider_ep.load() is get_provider_info


# ------------------------------------------------------------------ [escalation] reader


class FakeConf:
    def __init__(self, values: dict[tuple[str, str], str]):
        self.values = values

    def get(self, section, key, fallback=None):
        return self.values.get((section, key), fallback)


def test_settings_defaults():
    conf = FakeConf({("database", "sql_alchemy_conn"): "sqlite:////tmp/airflow.db", ("api", "port"): "8080"})
    settings = load_settings(conf)
    assert settings.enabled is True
    assert settings.policies_file == ""
    assert settings.store_url == "" and settings.uses_metadata_db
    assert settings.effective_store_url == "sqlite:////tmp/airflow.db"
    assert settings.scheduler == "apscheduler"
    assert settings.check_interval_seconds == 10
    assert settings.max_concurrent_deliveries == 100
    assert settings.base_url == "http://localhost:8080"


def test_settings_values_and_base_url_fallback():
    conf = FakeConf(
        {
            ("escalation", "enabled"): "false",
            ("escalation", "policies_file"): "/etc/p.yaml",
            ("escalation", "store_url"): "postgresql://u:p@db/esc",
            ("escalation", "scheduler"): "AsyncIO",
            ("escalation", "check_interval_seconds"): "0.5",
            ("escalation", "max_concurrent_deliveries"): "7",
            ("api", "base_url"): "https://airflow.example.com/",
            ("database", "sql_alchemy_conn"): "sqlite:////tmp/airflow.db",
        }
    )
    settings = load_settings(conf)
    assert settings.enabled is False
    assert settings.effective_store_url == "postgresql://u:p@db/esc" and not settings.uses_metadata_db
    assert settings.scheduler == "asyncio"
    assert settings.check_interval_seconds == 0.5
    assert settings.max_concurrent_deliveries == 7
    assert settings.base_url == "https://airflow.example.com"
    assert settings.ui_url("/escalation/api/v1") == "https://airflow.example.com/escalation/api/v1"
    conf.values[("escalation", "base_url")] = "https://alerts.example.com/airflow/"
    assert load_settings(conf).base_url == "https://alerts.example.com/airflow"


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("scheduler", "cron", "[escalation] scheduler: unknown value 'cron'"),
        ("check_interval_seconds", "0", "[escalation] check_interval_seconds: must be > 0"),
        ("check_interval_seconds", "soon", "[escalation] check_interval_seconds: expected a number"),
        ("check_interval_seconds", "nan", "expected a finite number"),
        ("max_concurrent_deliveries", "0", "[escalation] max_concurrent_deliveries: must be >= 1"),
        ("max_concurrent_deliveries", "2.5", "expected a whole number, got '2.5'"),
        ("enabled", "maybe", "[escalation] enabled: expected true or false, got 'maybe'"),
    ],
)
def test_settings_errors_name_the_option_and_value(key, value, message):
    with pytest.raises(EscalationConfigError, match=None) as info:
        load_settings(FakeConf({("escalation", key): value}))
    assert message in str(info.value)


def test_settings_read_airflow_conf(monkeypatch):
    monkeypatch.setenv("AIRFLOW__ESCALATION__CHECK_INTERVAL_SECONDS", "3")
    monkeypatch.setenv("AIRFLOW__ESCALATION__POLICIES_FILE", "/x/policies.yaml")
    settings = load_settings()
    assert settings.check_interval_seconds == 3
    assert settings.policies_file == "/x/policies.yaml"
    assert settings.metadata_db_url  # [database] sql_alchemy_conn


def test_airflow_loads_the_connection_form_from_provider_info():
    """ProvidersManager skips (with only a log warning) a form it cannot validate."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-escalation" in manager.providers
    behaviour = manager.field_behaviours["escalation"]
    assert behaviour["relabeling"]["host"]
    widgets = {k for k in manager.connection_form_widgets if k.startswith("extra__escalation__")}
    declared = get_provider_info()["connection-types"][0].get("conn-fields", {})
    assert widgets == {f"extra__escalation__{name}" for name in declared}
