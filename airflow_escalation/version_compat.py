"""The oldest Airflow this provider runs on, checked when the Airflow layer is imported.

Every module Airflow loads from this provider (hook, operator, sensor, trigger, notifier, plugin,
DB manager, CLI) imports this one first, so an older Airflow fails at once with what to do,
instead of somewhere deep in a task. The core (engine, stores, schedulers) does not: it runs
without Airflow. CI tests this floor beside the newest 3.x (scripts/test_airflow_floor.sh);
pyproject's ``apache-airflow>=`` says the same (tests/airflow/test_version_compat.py checks).
"""

from __future__ import annotations

MIN_AIRFLOW_VERSION = "3.2.0"


class UnsupportedAirflowVersion(RuntimeError):
    """The installed Airflow is older than :data:`MIN_AIRFLOW_VERSION`."""


def check_airflow_version(installed: str | None = None) -> str:
    """Return the installed Airflow version; raise :class:`UnsupportedAirflowVersion` below the floor."""
    from packaging.version import Version

    if installed is None:
        from airflow import __version__ as installed
    if Version(Version(installed).base_version) < Version(MIN_AIRFLOW_VERSION):
        raise UnsupportedAirflowVersion(
            f"airflow-provider-escalation needs apache-airflow>={MIN_AIRFLOW_VERSION}, but Airflow "
            f"{installed} is installed: upgrade Airflow (pip install 'apache-airflow>={MIN_AIRFLOW_VERSION}') "
            f"or pin an older airflow-provider-escalation"
        )
    return installed


AIRFLOW_VERSION = check_airflow_version()
