"""An auth manager that grants some users only some Dags, for the per-Dag authorization tests.

SimpleAuthManager answers by role alone (every user reads every Dag). This subclass keeps its
users, roles, login and tokens, and restricts the users of :data:`DAG_GRANTS` to their Dags, as
FAB's per-Dag permissions or a multi-team auth manager do: ``is_authorized_dag`` is True only
for a listed Dag (never for the Dag-wide check without details), so ``get_authorized_dag_ids``
(Airflow's own, through ``filter_authorized_dag_ids``) lists just those.

Configure it with ``AIRFLOW__CORE__AUTH_MANAGER=authz_auth_manager.PerDagAuthManager`` and this
directory on ``PYTHONPATH``; users as usual with ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS``.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: user name -> the Dags that user may read and (with role USER or more) change
DAG_GRANTS: dict[str, frozenset[str]] = {"team_a": frozenset({"A"})}
#: the users of the tests: name -> SimpleAuthManager role
USERS = {"admin": "admin", "viewer": "viewer", "team_a": "user"}
USERS_SETTING = ",".join(f"{name}:{role}" for name, role in USERS.items())
AUTH_MANAGER = f"{__name__}.PerDagAuthManager"


class PerDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        granted = DAG_GRANTS.get(user.get_name())
        if granted is not None and (details is None or details.id not in granted):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
