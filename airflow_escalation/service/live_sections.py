"""The sections of a policies revision beyond the policies, swapped in on a running replica.

A revision is one document: policies and settings, and also the users directory, the schedules
and the maintenance windows (``users:``, ``schedules:``, ``maintenance_windows:``, read by
:class:`~airflow_escalation.oncall.runtime.OnCall`) and the failure routes (``routes:``, read by
the detector and ``/routes``). :func:`build` makes the new objects from a validated config
without touching the running ones; :func:`swap` then replaces the references, with no ``await``
in between, so a trigger, a due step or a Slack click on this replica sees either the old
sections or the new ones, never a mix (the detector routes each failure with the table in force
when it checks it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from airflow_escalation.detection.routes import RouteTable, config_routes
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig

log = logging.getLogger("airflow_escalation.service")

__all__ = ["Sections", "build", "swap"]


@dataclass(frozen=True)
class Sections:
    """What a revision changes besides the policies; ``oncall`` None: the on-call sections are
    the ones in force (the running ``OnCall`` and its silence cache are kept)."""

    routes: RouteTable
    oncall: Optional[Any] = None


def _oncall_sections(config: Optional[EscalationPolicyConfig]) -> dict[str, Any]:
    oncall = getattr(config, "oncall", None)
    return oncall.to_dict() if oncall is not None else {}


def build(service: Any, config: EscalationPolicyConfig) -> Sections:
    """The new route table and, when its sections changed, the new ``OnCall``; raises (and
    nothing is swapped) when one cannot be built."""
    routes = config_routes(config)
    engine = getattr(service, "engine", None)
    if engine is None:
        return Sections(routes)
    current = getattr(engine, "oncall", None)
    if current is not None and _oncall_sections(config) == _oncall_sections(service.policy_config):
        return Sections(routes)
    from airflow_escalation.oncall.runtime import OnCall

    return Sections(routes, OnCall(config.oncall, engine.store, engine.clock))


def swap(service: Any, config: EscalationPolicyConfig, sections: Sections) -> None:
    """Put ``config`` and ``sections`` in force on this replica (synchronous: no await inside)."""
    engine = getattr(service, "engine", None)
    if engine is not None:
        for name in list(engine.policies):
            if name not in config.policies:
                engine.unregister_policy(name)
        for policy in config.policies.values():
            engine.register_policy(policy)
        if sections.oncall is not None:
            engine.set_oncall(sections.oncall)
    service.policy_config = config
    service.routes = sections.routes
    for warning in sections.routes.warnings:
        log.warning("escalation service: %s", warning)
    detector = getattr(service, "detector", None)
    if detector is not None:
        detector.routes = sections.routes
    elif sections.routes and engine is not None and engine.is_running:
        _start_detector(service, sections.routes)


def _start_detector(service: Any, routes: RouteTable) -> None:
    """Routes where there were none: start the detector, unless ``detect_failures`` is off."""
    from airflow_escalation.detection.watcher import FailureDetector, load_detector_settings

    try:
        settings = load_detector_settings()
    except Exception as exc:  # noqa: BLE001 - EscalationConfigError names the option
        log.error("escalation service: the failure detector cannot start: %s", exc)
        return
    if not settings.enabled:
        return
    service.detector = FailureDetector(service, routes, settings)
    service.detector.start()
