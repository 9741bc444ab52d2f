"""Which escalation user a Slack member is: the one lookup the Slack route asks.

``user_for_slack_id(slack_user_id) -> str | None`` answers from, in order:

1. the users directory, when the service has one (:func:`users_directory`: the on-call
   directory, ``engine.oncall.directory`` -- the ``users:`` section of the policies file -- or
   ``EscalationService.users_directory``): any object with ``users``, each with an ``id`` and
   ``contacts`` whose ``type`` is ``"slack"`` and whose ``address`` is the member id;
2. the Slack connection's ``slack_users`` extra, ``{"U0123ABCD": "alice", ...}``: set by whoever
   may edit connections, for deployments without a users directory.

``None``: nobody -- the Slack route refuses the click and says why.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from airflow_escalation.core import bounds

SlackUserLookup = Callable[[str], "str | None"]

#: the Slack connection extra with the fallback mapping of member ids to escalation users
SLACK_USERS_EXTRA = "slack_users"


def users_directory(service: Any) -> Any:
    """The users directory the service knows, or None."""
    explicit = getattr(service, "users_directory", None)
    if explicit is not None:
        return explicit
    oncall = getattr(getattr(service, "engine", None), "oncall", None)
    return getattr(oncall, "directory", None)


def from_directory(directory: Any, slack_user_id: str) -> str | None:
    """The id of the directory's user with a ``slack`` contact ``slack_user_id``, or None."""
    for user in getattr(directory, "users", None) or ():
        for contact in getattr(user, "contacts", None) or ():
            if getattr(contact, "type", None) == "slack" and getattr(contact, "address", None) == slack_user_id:
                user_id = getattr(user, "id", None)
                return user_id if isinstance(user_id, str) and user_id else None
    return None


def from_extra(extra: Mapping[str, Any], slack_user_id: str) -> str | None:
    """The escalation user the connection's ``slack_users`` extra maps ``slack_user_id`` to."""
    mapping = extra.get(SLACK_USERS_EXTRA)
    if isinstance(mapping, str):  # the connection form stores a JSON text
        try:
            mapping = json.loads(mapping)
        except ValueError:
            return None
    if not isinstance(mapping, Mapping):
        return None
    user = mapping.get(slack_user_id)
    if not isinstance(user, str) or not user:
        return None
    try:
        return bounds.check_text(user, f"{SLACK_USERS_EXTRA}[{slack_user_id}]", allow_empty=False)
    except ValueError:
        return None


def slack_user_lookup(directory: Any, extra: Mapping[str, Any]) -> SlackUserLookup:
    """``user_for_slack_id``: the directory first, then the connection's mapping."""

    def user_for_slack_id(slack_user_id: str) -> str | None:
        if directory is not None:
            found = from_directory(directory, slack_user_id)
            if found is not None:
                return found
        return from_extra(extra, slack_user_id)

    return user_for_slack_id
