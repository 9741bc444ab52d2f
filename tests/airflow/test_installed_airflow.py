"""What an Airflow user sees once the package is installed, through the real ``airflow``
command on a fresh AIRFLOW_HOME: the provider listed (with its documentation link on the
Providers page), the plugin loaded, ``airflow db migrate`` creating the escalation tables.

CI runs this file against the floor Airflow and the newest 3.x as well, each in a venv of its own
with the built wheel (scripts/test_airflow_floor.sh)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_escalation.get_provider_info import DOCS_URL, PACKAGE_NAME
from airflow_escalation.stores.sql_schema import metadata

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
    )
    return env


def airflow(env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(
        [AIRFLOW, *argv], env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_db_migrate_creates_the_escalation_tables(home):
    airflow(home, "db", "migrate")
    with sqlite3.connect(home["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert set(metadata.tables) <= tables, sorted(tables)
    assert "dag_run" in tables  # Airflow's own, in the same database


def test_providers_list_shows_the_provider(home):
    from importlib import metadata as dist_metadata

    listed = {p["package_name"]: p for p in json.loads(airflow(home, "providers", "list", "-o", "json"))}
    assert listed[PACKAGE_NAME]["version"] == dist_metadata.version(PACKAGE_NAME)


def test_the_providers_page_links_the_documentation():
    """GET /api/v2/providers answers ``documentation_url`` from what ProvidersManager read."""
    from airflow.api_fastapi.core_api.services.public.providers import _provider_mapper
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers[PACKAGE_NAME]
    # Airflow 3.2.0 keeps the blank after the comma of "Documentation, URL" (3.3 strips it)
    assert _provider_mapper(provider).documentation_url.strip() == DOCS_URL


def test_plugin_is_loaded(home):
    plugins = {p["name"]: p for p in json.loads(airflow(home, "plugins", "-o", "json"))}
    apps = plugins["escalation"]["fastapi_apps"]
    assert [app["url_prefix"] for app in apps] == ["/escalation"], apps


@pytest.mark.skipif(
    not os.environ.get("ESCALATION_EXPECT_INSTALLED"),
    reason="only when testing an installed wheel (scripts/test_airflow_versions.sh)",
)
def test_the_package_under_test_is_the_installed_wheel():
    import airflow_escalation
    from airflow_escalation.demo import EXAMPLES

    assert "site-packages" in airflow_escalation.__file__
    # the example DAGs and policies ship in the wheel
    assert (EXAMPLES / "escalation_operator.py").is_file()
    assert (EXAMPLES / "policies" / "production_critical.yaml").is_file()
    assert str(EXAMPLES).startswith(str(Path(airflow_escalation.__file__).parent))
