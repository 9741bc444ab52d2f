"""An escalation user's Airflow identity, so that the auth manager can judge what they may do.

A click in Slack carries no Airflow session: the Slack route maps the Slack member to an
escalation user (``directory``), takes that user's id as their **Airflow username**, and asks the
auth manager about that Airflow user exactly as for a logged-in one (``auth.authorize_write`` on
the record's Dag). Looking a user up by name is not part of Airflow's auth-manager interface;
these auth managers are supported:

* ``SimpleAuthManager``: the user and role from ``[core] simple_auth_manager_users`` (every
  name is an admin under ``simple_auth_manager_all_admins``);
* the FAB auth manager: the user of that name in its user table (inactive users are refused).

With any other auth manager :func:`airflow_user` raises :class:`IdentityUnavailable`, and the
Slack route refuses every click with that reason (the one-click links still work).
"""

from __future__ import annotations

from typing import Any


class IdentityUnavailable(Exception):
    """This Airflow's auth manager cannot look a user up by name."""


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def airflow_user(username: str) -> Any | None:
    """The Airflow user named ``username`` (a ``BaseUser``), or None when there is none.

    Blocking (FAB reads its user table): call it in a worker thread.
    """
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    manager = _auth_manager()
    kind = type(manager).__name__
    if isinstance(manager, SimpleAuthManager):  # and its subclasses
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.configuration import conf

        if conf.getboolean("core", "simple_auth_manager_all_admins", fallback=False):
            return SimpleAuthManagerUser(username=username, role="ADMIN")
        for user in manager.get_users():
            if user.username == username:
                return user
        return None
    security_manager = getattr(manager, "security_manager", None)
    if kind == "FabAuthManager" and security_manager is not None:
        user = security_manager.find_user(username=username)
        if user is None or not getattr(user, "is_active", True):
            return None
        return user
    raise IdentityUnavailable(
        f"the auth manager {kind} cannot look users up by name, which acting from Slack needs "
        "(SimpleAuthManager and the FAB auth manager can); use the one-click links instead"
    )
