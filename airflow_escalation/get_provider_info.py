"""Provider metadata, read by Airflow's ProvidersManager through the
``apache_airflow_provider`` entry point.

Airflow validates this dict against ``airflow/provider_info.schema.json`` in every command that
discovers providers: a bad key breaks them all. ``tests/airflow/test_provider_info.py`` validates
it. Keep this module light: it imports neither Airflow nor the package's ``__init__`` (the
version comes from the installed distribution's metadata), only ``hooks/connection_info.py``,
which is plain data.
"""

from __future__ import annotations

import copy
from importlib import metadata
from typing import Any

PACKAGE_NAME = "airflow-provider-escalation"
# The documentation site (docs/, built by MkDocs); pyproject's Documentation URL says the same
# (tests/airflow/test_provider_info.py checks it) and the Providers page links to it.
DOCS_URL = "https://airflow-escalation.github.io/airflow-escalation/"
CLI_FUNCTION_NAME = "airflow_escalation.cli.definition.get_escalation_cli_commands"
CONNECTION_TYPE = "escalation"
HOOK_CLASS_NAME = "airflow_escalation.hooks.escalation.EscalationHook"
PLUGIN_CLASS_NAME = "airflow_escalation.plugins.escalation_plugin.EscalationPlugin"
INTEGRATION_NAME = "Escalation"
NOTIFIER_CLASS_NAME = "airflow_escalation.notifications.escalation.EscalationNotifier"
DB_MANAGER_CLASS_NAME = "airflow_escalation.stores.airflow_db.EscalationDBManager"


def _option(
    description: str, type_: str, example: str | None, default: str | None, *, sensitive: bool = False
) -> dict[str, Any]:
    option: dict[str, Any] = {
        "description": description,
        "version_added": "0.1.0",
        "type": type_,
        "example": example,
        "default": default,
    }
    if sensitive:
        option["sensitive"] = True
    return option


CONFIG: dict[str, Any] = {
    "escalation": {
        "description": (
            "The escalation service: a FastAPI app the plugin mounts in the Airflow API server at "
            "/escalation. It keeps escalation records in a SQL store (the metadata database by "
            "default), runs the escalation clock, and serves the REST API at "
            f"/escalation/api/v1 (see {DOCS_URL}service/)."
        ),
        "options": {
            "enabled": _option(
                "Run the escalation service in the API server. When False the app stays mounted but "
                "starts no engine and answers 503 (GET /escalation/api/v1/health says why).",
                "boolean",
                "False",
                "True",
            ),
            "policies_file": _option(
                "Path of a YAML file with the escalation policies: the spec's `escalation:` block "
                "(policies, default_policy, global_enabled, max_concurrent_escalations, "
                "scheduler_config, retention_days ...). Its `store` section is ignored: the service "
                "stores in `store_url`. Empty: no policies (triggers may still carry an inline "
                "policy). Read when the API server starts.",
                "string",
                "/opt/airflow/config/escalation_policies.yaml",
                "",
            ),
            "policies_source": _option(
                "Which wins for the policies: `database` (default) keeps them in the metadata "
                "database with revisions, edited over REST and in the UI; the policies_file only "
                "seeds an empty database. `file` (config as code): the policies_file is imported "
                "as a revision at each start and edits over REST/UI are refused.",
                "string",
                "file",
                "database",
            ),
            "policy_refresh_seconds": _option(
                "How often each API server checks the database for a new policies revision (a "
                "change made on another replica applies within this many seconds).",
                "float",
                "5",
                "2",
            ),
            "store_url": _option(
                "SQLAlchemy URL of the database holding escalation records (SQLite, PostgreSQL or "
                "MySQL). Empty: the Airflow metadata database ([database] sql_alchemy_conn); the "
                "tables are named escalation_record, escalation_event and escalation_delivery.",
                "string",
                "postgresql+psycopg2://airflow:***@db/escalation",
                "",
                sensitive=True,
            ),
            "scheduler": _option(
                "What wakes the escalation engine at each due time: `apscheduler` (APScheduler 3 "
                "AsyncIOScheduler) or `asyncio` (plain asyncio timers). Either runs inside each API "
                "server worker; the store's claims make several of them safe.",
                "string",
                "asyncio",
                "apscheduler",
            ),
            "check_interval_seconds": _option(
                "Seconds between safety sweeps of the store. Due escalations are also woken at their "
                "exact due time; the sweep catches work written by another replica or left by a "
                "stopped one.",
                "float",
                "5",
                "10",
            ),
            "max_concurrent_deliveries": _option(
                "Notifications sent concurrently by one API-server worker.",
                "integer",
                "20",
                "100",
            ),
            "detect_failures": _option(
                "Let the service page failures itself through the failure routes of the policies "
                f"file (routes:), whether or not the Dag has a callback; see {DOCS_URL}routes/. "
                "Without routes nothing is read.",
                "boolean",
                "False",
                "True",
            ),
            "detect_interval_seconds": _option(
                "Seconds between two reads of new failures from the metadata database by each API-server worker.",
                "float",
                "2",
                "1",
            ),
            "detect_lookback_minutes": _option(
                "On start, how far back the detector reads failures (those already paged are in "
                "the store and are skipped); a failure older than this when the service starts is "
                "not paged.",
                "float",
                "60",
                "15",
            ),
            "detect_overlap_seconds": _option(
                "Each read starts this many seconds before the previous one ended, so a failure "
                "committed late (or with a skewed clock) is not missed.",
                "float",
                "60",
                "30",
            ),
            "base_url": _option(
                "Public URL of the Airflow UI/API server used in links sent with notifications. "
                "Empty: [api] base_url (or http://localhost:<[api] port>).",
                "string",
                "https://airflow.example.com",
                "",
            ),
            "spool_dir": _option(
                "Local directory where EscalationNotifier keeps the triggers (and resolves) it could "
                "not hand to the escalation service, one JSON file each, until the next escalation "
                "callback, operator, sensor or triggerer poll on the same machine (or `airflow "
                f"escalation spool drain`) sends them; see {DOCS_URL}dags/. Read by task processes, the "
                "dag-processor and the triggerer. Empty: $AIRFLOW_HOME/escalation_spool.",
                "string",
                "/var/lib/airflow/escalation_spool",
                "",
            ),
            "component_jwt_max_role": _option(
                "Highest role a JWT signed by DAG code may claim (an `escalation` connection with "
                "extra auth_type jwt, which signs with [api_auth] jwt_secret in task processes, the "
                "triggerer and the dag-processor): VIEWER, USER or OP; ADMIN only when set here. "
                "Read where the token is signed. The default authentication is a login on the "
                "connection, which this option does not concern.",
                "string",
                "USER",
                "OP",
            ),
        },
    },
}

# The connection form is declared by the hook's author in hooks/connection_info.py (no Airflow
# import; the hook module itself is never imported here). Should that module ever fail to import,
# a minimal declaration keeps provider discovery, and so every Airflow command, working.
_FALLBACK_CONNECTION_TYPE: dict[str, Any] = {
    "connection-type": CONNECTION_TYPE,
    "hook-class-name": HOOK_CLASS_NAME,
    "hook-name": "Escalation service",
}


def _connection_types() -> list[dict[str, Any]]:
    try:
        from airflow_escalation.hooks.connection_info import CONNECTION_TYPE as declared
    except Exception:  # noqa: BLE001 - provider info must never raise
        return [dict(_FALLBACK_CONNECTION_TYPE)]
    return [copy.deepcopy(declared)]


def _version() -> str:
    try:
        return metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:  # a source tree on sys.path without an install
        return "0+unknown"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": "Escalation",
        "description": (
            "Multi-level notification escalation for Apache Airflow: durable, replica-safe "
            "escalation policies served from the Airflow API server."
        ),
        "versions": [_version()],
        "integrations": [
            {
                "integration-name": INTEGRATION_NAME,
                "external-doc-url": DOCS_URL,
                "tags": ["alerting"],
            }
        ],
        "hooks": [{"integration-name": INTEGRATION_NAME, "python-modules": ["airflow_escalation.hooks.escalation"]}],
        "operators": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["airflow_escalation.operators.escalation"]}
        ],
        "sensors": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["airflow_escalation.sensors.escalation"]}
        ],
        "triggers": [
            {"integration-name": INTEGRATION_NAME, "python-modules": ["airflow_escalation.triggers.escalation"]}
        ],
        "notifications": [NOTIFIER_CLASS_NAME],
        "connection-types": _connection_types(),
        "config": CONFIG,
        # `airflow db migrate` creates and upgrades the escalation tables
        "db-managers": [DB_MANAGER_CLASS_NAME],
        # `airflow escalation ...`: Airflow imports this function only to build its CLI parser
        "cli": [CLI_FUNCTION_NAME],
        # The plugin is registered through the `airflow.plugins` entry point only: listing it
        # here too makes Airflow load it twice when providers are discovered eagerly, which it
        # reports as a plugin import error.
    }
