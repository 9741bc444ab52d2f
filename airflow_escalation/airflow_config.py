"""The ``[escalation]`` section of the Airflow configuration.

Every option has a default here and in ``get_provider_info()["config"]`` (which is what
``airflow config list`` shows); environment variables work as for any Airflow option, e.g.
``AIRFLOW__ESCALATION__POLICIES_FILE``.

=========================== ============== ====================================================
option                      default        meaning
=========================== ============== ====================================================
``enabled``                 ``True``       run the escalation service in the API server
``policies_file``           (empty)        YAML file of policies (the spec's ``escalation:`` block)
``policies_source``         ``database``   which wins: ``database`` (revisions edited over REST/UI;
                                           the file seeds an empty database) or ``file``
                                           (config as code: imported at start, edits refused)
``policy_refresh_seconds``  ``2``          how often a replica looks for a new policies revision
``store_url``               (empty)        SQLAlchemy URL of the store; empty = the metadata DB
                                           (``[database] sql_alchemy_conn``)
``scheduler``               ``apscheduler`` what wakes the engine: ``apscheduler`` or ``asyncio``
``check_interval_seconds``  ``10``         safety sweep interval (due work is also woken exactly)
``max_concurrent_deliveries`` ``100``      notifications in flight at once per API-server worker
``base_url``                (empty)        public URL of the Airflow UI used in links;
                                           empty = ``[api] base_url``
``spool_dir``               (empty)        where callbacks keep hand-offs the service could not
                                           take (read by task processes, not by the API
                                           server); empty = ``$AIRFLOW_HOME/escalation_spool``
``component_jwt_max_role``  ``OP``         highest role of a JWT that DAG code signs itself
                                           (connection extra ``auth_type: jwt``; opt-in)
=========================== ============== ====================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECTION = "escalation"

DEFAULTS: dict[str, str] = {
    "enabled": "True",
    "policies_file": "",
    "policies_source": "database",
    "policy_refresh_seconds": "2",
    "store_url": "",
    "scheduler": "apscheduler",
    "check_interval_seconds": "10",
    "max_concurrent_deliveries": "100",
    "base_url": "",
    "spool_dir": "",
    "component_jwt_max_role": "OP",
    # the failure detector (airflow_escalation.detection.watcher)
    "detect_failures": "True",
    "detect_interval_seconds": "1",
    "detect_lookback_minutes": "15",
    "detect_overlap_seconds": "30",
}

SCHEDULERS = ("apscheduler", "asyncio")
#: which wins: the policies stored in the database (edited over REST/UI; the file seeds an empty
#: database), or the policies file (config as code: imported at start, edits refused)
POLICY_SOURCES = ("database", "file")

_TRUE = {"true", "t", "1", "yes", "y", "on"}
_FALSE = {"false", "f", "0", "no", "n", "off"}


class EscalationConfigError(ValueError):
    """An ``[escalation]`` option has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class EscalationSettings:
    """The ``[escalation]`` options, parsed and validated."""

    enabled: bool = True
    policies_file: str = ""
    policies_source: str = "database"
    policy_refresh_seconds: float = 2.0
    store_url: str = ""
    scheduler: str = "apscheduler"
    check_interval_seconds: float = 10.0
    max_concurrent_deliveries: int = 100
    base_url: str = ""
    metadata_db_url: str = ""

    @property
    def effective_store_url(self) -> str:
        """Where the store lives: ``store_url``, or else the Airflow metadata database."""
        return self.store_url or self.metadata_db_url

    @property
    def uses_metadata_db(self) -> bool:
        return not self.store_url

    def ui_url(self, path: str = "") -> str:
        """An absolute link into the Airflow UI/API server, e.g. ``ui_url("/escalation/api/v1")``."""
        return self.base_url.rstrip("/") + "/" + path.lstrip("/") if path else self.base_url


def _option(conf: Any, key: str, fallback: str | None = None) -> str:
    value = conf.get(SECTION, key, fallback=DEFAULTS[key] if fallback is None else fallback)
    return "" if value is None else str(value).strip()


def _bool(key: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise EscalationConfigError(f"[{SECTION}] {key}: expected true or false, got {raw!r}")


def _number(key: str, raw: str, cast: type, minimum: float, strict: bool) -> Any:
    try:
        value = cast(raw)
    except (TypeError, ValueError):
        kind = "a whole number" if cast is int else "a number"
        raise EscalationConfigError(f"[{SECTION}] {key}: expected {kind}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise EscalationConfigError(f"[{SECTION}] {key}: expected a finite number, got {raw!r}")
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise EscalationConfigError(f"[{SECTION}] {key}: must be {bound}, got {raw!r}")
    return value


def _default_base_url(conf: Any) -> str:
    base = conf.get("api", "base_url", fallback="") or ""
    if base:
        return str(base).rstrip("/")
    port = conf.get("api", "port", fallback="8080") or "8080"
    return f"http://localhost:{port}"


def public_base_url(conf: Any = None) -> str:
    """Airflow's public URL as the service knows it: ``[escalation] base_url``, else ``[api]
    base_url`` (what ``EscalationSettings.base_url`` holds)."""
    if conf is None:
        from airflow.configuration import conf as airflow_conf

        conf = airflow_conf
    return (_option(conf, "base_url") or _default_base_url(conf)).rstrip("/")


def load_settings(conf: Any = None) -> EscalationSettings:
    """Read and validate ``[escalation]``; raise :class:`EscalationConfigError` naming the option.

    ``conf`` defaults to ``airflow.configuration.conf`` (anything with ``get(section, key,
    fallback=...)`` works, which keeps this testable without an Airflow home).
    """
    if conf is None:
        from airflow.configuration import conf as airflow_conf

        conf = airflow_conf
    scheduler = _option(conf, "scheduler").lower()
    if scheduler not in SCHEDULERS:
        raise EscalationConfigError(
            f"[{SECTION}] scheduler: unknown value {scheduler!r} (allowed: {', '.join(SCHEDULERS)})"
        )
    source = _option(conf, "policies_source").lower()
    if source not in POLICY_SOURCES:
        raise EscalationConfigError(
            f"[{SECTION}] policies_source: unknown value {source!r} (allowed: {', '.join(POLICY_SOURCES)})"
        )
    return EscalationSettings(
        enabled=_bool("enabled", _option(conf, "enabled")),
        policies_file=_option(conf, "policies_file"),
        policies_source=source,
        policy_refresh_seconds=_number(
            "policy_refresh_seconds", _option(conf, "policy_refresh_seconds"), float, 0, strict=True
        ),
        store_url=_option(conf, "store_url"),
        scheduler=scheduler,
        check_interval_seconds=_number(
            "check_interval_seconds", _option(conf, "check_interval_seconds"), float, 0, strict=True
        ),
        max_concurrent_deliveries=_number(
            "max_concurrent_deliveries", _option(conf, "max_concurrent_deliveries"), int, 1, strict=False
        ),
        base_url=public_base_url(conf),
        metadata_db_url=str(conf.get("database", "sql_alchemy_conn", fallback="") or ""),
    )
