"""The Airflow plugin: mounts the escalation service in the API server at ``/escalation``.

It also adds the Escalations page to the UI's navigation and an escalation tab to the
task-instance, task and Dag-run pages (``external_views``; the pages are served by the same app
under ``/escalation/ui``, see docs/ui.md).

Registered through the ``airflow.plugins`` entry point (loaded by default) and listed in the
provider info (loaded when ``[core] lazy_discover_providers = False``).

Every Airflow process that loads plugins imports this module (task processes too), so it stays
cheap: ``create_app()`` builds the FastAPI object and its routes only; the engine, the store and
the clock start in the app's lifespan, which only the API server runs.
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

from airflow.plugins_manager import AirflowPlugin

from airflow_escalation.service.app import create_app
from airflow_escalation.service.ui.render import NAV_URL_ROUTE

URL_PREFIX = "/escalation"

# The UI's iframes. Hrefs and icons are relative: the Airflow UI resolves them against its
# <base href>, so they also work when Airflow is served under a path. Tabs are templated by the
# UI ({DAG_ID}, {RUN_ID}, {TASK_ID}, {MAP_INDEX}; a placeholder the page lacks stays as is and the
# escalation page ignores it). Each url_route must be unique across all plugins: a clash drops
# the view, and a dict that fails the UI's validation drops the whole plugin from the UI.
_UI = URL_PREFIX.lstrip("/") + "/ui"
_ICON = {"icon": f"{_UI}/static/icon.svg", "icon_dark_mode": f"{_UI}/static/icon-dark.svg"}
EXTERNAL_VIEWS = [
    {
        "name": "Escalations",
        "href": f"{_UI}/",
        "destination": "nav",
        "url_route": NAV_URL_ROUTE,
        "nav_top_level": True,
        **_ICON,
    },
    {
        "name": "Escalation",
        "destination": "task_instance",
        "url_route": "escalation-ti",
        "href": f"{_UI}/ti?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}&map_index={{MAP_INDEX}}",
        **_ICON,
    },
    {
        "name": "Escalations",
        "destination": "task",
        "url_route": "escalation-task",
        "href": f"{_UI}/ti?dag_id={{DAG_ID}}&task_id={{TASK_ID}}",
        **_ICON,
    },
    {
        "name": "Escalations",
        "destination": "dag_run",
        "url_route": "escalation-run",
        "href": f"{_UI}/ti?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
        **_ICON,
    },
]


class EscalationPlugin(AirflowPlugin):
    """Escalation service (REST API under ``/escalation/api/v1``) and its pages in the UI."""

    name = "escalation"
    fastapi_apps = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Escalation service"},
    ]
    external_views = EXTERNAL_VIEWS
