"""The detector: a loop in the escalation service that pages for failures no callback reported.

Every ``[escalation] detect_interval_seconds`` (1 s) it reads new failures from the metadata
database (:mod:`.scan`), gives each to the failure routes (:mod:`.routes`: the first that
matches wins) and triggers the route's policy through the engine, with the context the notifier
would have sent. A task or run that later succeeds resolves the open escalations of the incident
its route gives it (``resolve_on_success``, default true), as the notifier's ``resolver()`` does.

**One incident, however it arrived.** Before triggering, the detector asks the store whether the
incident of that DAG already has a record created at or after the failure (less ``SLACK``): the
notifier's callback (which runs before the task's final state is written) or another replica got
there first, so nothing is triggered. Two replicas that race past that check both call the engine,
whose open-record-per-incident rule (a compare-and-swap in the store) keeps one record; the
second call joins it and nobody is paged twice. After a restart the detector re-reads the last
``detect_lookback_minutes`` (15): what was paged already is in the store and is skipped, so the
store is the watermark that survives restarts; the in-memory one only saves re-reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Optional

from airflow_escalation.core import bounds
from airflow_escalation.core.types import OPEN_STATE_VALUES
from airflow_escalation.detection.routes import (
    DAG_RUN_FAILED,
    DAG_RUN_OVER_DURATION,
    DURATION_KINDS,
    TASK_FAILED,
    TASK_OVER_DURATION,
    TASK_UP_FOR_RETRY,
    FailureEvent,
    Route,
    RouteTable,
    incident_key,
)

if TYPE_CHECKING:
    from airflow_escalation.detection.scan import FailureScanner

log = logging.getLogger("airflow_escalation.detection")

DETECTOR_ACTOR = "escalation-detector"
# a record created this long before the failure's time still counts as its page (clock skew
# between the worker that wrote end_date and the API server that created the record)
SLACK = timedelta(seconds=2)
# failure identities remembered to skip re-reads of the overlap without asking the store
_SEEN_MAX = 10_000
# the kinds a success resolves, by the success's kind (task or run)
_RESOLVES = {
    TASK_FAILED: (TASK_FAILED, TASK_UP_FOR_RETRY, TASK_OVER_DURATION),
    DAG_RUN_FAILED: (DAG_RUN_FAILED, DAG_RUN_OVER_DURATION),
}


@dataclass(frozen=True)
class DetectorSettings:
    enabled: bool = True
    interval_seconds: float = 1.0
    lookback_minutes: float = 15.0
    overlap_seconds: float = 30.0
    batch: int = bounds.MAX_DETECT_BATCH


def load_detector_settings(conf: Any = None) -> DetectorSettings:
    """``[escalation] detect_failures``, ``detect_interval_seconds``, ``detect_lookback_minutes``,
    ``detect_overlap_seconds``; an invalid value raises ``EscalationConfigError`` naming it."""
    from airflow_escalation.airflow_config import _bool, _number, _option

    if conf is None:
        from airflow.configuration import conf as airflow_conf

        conf = airflow_conf

    def number(key: str, strict: bool) -> float:
        return float(_number(key, _option(conf, key), float, 0, strict=strict))

    return DetectorSettings(
        enabled=_bool("detect_failures", _option(conf, "detect_failures")),
        interval_seconds=number("detect_interval_seconds", True),
        lookback_minutes=number("detect_lookback_minutes", False),
        overlap_seconds=number("detect_overlap_seconds", False),
    )


class FailureDetector:
    """Owns the loop; ``service`` is the running :class:`~airflow_escalation.service.app.EscalationService`."""

    def __init__(self, service: Any, routes: RouteTable, settings: DetectorSettings) -> None:
        self.service = service
        self.routes = routes
        self.settings = settings
        self._task: Optional[asyncio.Task] = None
        self._scanner: Optional[FailureScanner] = None
        self._seen: OrderedDict[tuple, None] = OrderedDict()
        self.last_error: Optional[str] = None
        self.ticks = 0
        self.triggered = 0
        self.resolved = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        from airflow_escalation.detection.scan import FailureScanner

        now = datetime.now(timezone.utc)
        self._scanner = FailureScanner(
            batch=self.settings.batch,
            overlap=timedelta(seconds=self.settings.overlap_seconds),
            start=now - timedelta(minutes=self.settings.lookback_minutes),
            heartbeat_margin=_heartbeat_margin(),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="escalation-failure-detector")
        log.info(
            "failure detector started: %d route(s), every %gs", len(self.routes.routes), self.settings.interval_seconds
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next tick retries from the same watermark
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    log.exception("failure detector: a scan failed (retrying every tick)")
                self.last_error = bounds.truncate(message)
            await asyncio.sleep(self.settings.interval_seconds)

    # ------------------------------------------------------------------ one tick

    async def tick(self) -> None:
        engine = self.service.engine
        if engine is None or not engine.is_running or self._scanner is None or not self.routes:
            return  # no routes: a revision removed them all (service/live_sections.py)
        self.ticks += 1
        over = {}
        for kind in DURATION_KINDS:
            seconds = [r.over_seconds() for _, r in self.routes.duration_routes(kind)]
            if seconds:
                over[kind] = min(s for s in seconds if s is not None)
        open_dags = await self._open_dag_ids(engine)
        now = datetime.now(timezone.utc)
        marks = dict(self._scanner.marks.since)
        found = await asyncio.to_thread(self._scanner.scan, now, self.routes.kinds, over, open_dags)
        try:
            for event in found.events:
                if event.identity in self._seen:
                    continue
                # a run over a shorter route's limit may reach a longer one's later: remember it
                # only once a route decided
                if await self._page(engine, event) or event.kind not in DURATION_KINDS:
                    self._remember(event.identity)
            for success in found.successes:
                if ("ok", *success.identity) not in self._seen:
                    await self._resolve(engine, success)
                    self._remember(("ok", *success.identity))
        except BaseException:
            # the store failed midway: read the same rows again next tick (what was done is
            # remembered, or in the store)
            self._scanner.marks.since = marks
            raise

    def _remember(self, identity: tuple) -> bool:
        """True the first time ``identity`` is seen (bounded memory: the store is the truth)."""
        if identity in self._seen:
            return False
        self._seen[identity] = None
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    async def _open_dag_ids(self, engine: Any) -> set[str]:
        try:
            records, _ = await engine.store_calls(
                engine.store.list_records, states=sorted(OPEN_STATE_VALUES), limit=bounds.MAX_DETECT_BATCH
            )
        except NotImplementedError:
            return set()
        return {r.dag_id for r in records if r.dag_id}

    # ------------------------------------------------------------------ paging and resolving

    def route_for(self, event: FailureEvent) -> Optional[Route]:
        route = self.routes.route_for(event)
        if route is not None and event.kind in DURATION_KINDS and event.at is not None:
            over = route.over_seconds() or 0
            if datetime.now(timezone.utc) - event.at < timedelta(seconds=over):
                return None  # over a shorter route's limit, not yet over this one's
        return route

    async def _handled(self, engine: Any, incident: str, event: FailureEvent) -> bool:
        """Has this failure been paged already (the notifier, another replica, before a restart)?

        Yes when the incident of that Dag has a record triggered, or joined, since the failed try
        (or run) began: the notifier's callback runs inside the try, before the try's end is
        written, so its page always falls in that window; an earlier failure's page falls before it.
        """
        records = await engine.store_calls(engine.store.get_by_incident, incident)
        since = (event.began or event.at or datetime.now(timezone.utc)) - SLACK
        for record in records:
            if record.dag_id != event.dag_id:
                continue
            if record.created_at >= since:
                return True
            joined = [h.get("at") or "" for h in record.history if h.get("event") == "retriggered"]
            joined.append(str(record.metadata.get("last_triggered_at") or ""))
            if any(_after(at, since) for at in joined):
                return True
        return False

    async def _page(self, engine: Any, event: FailureEvent) -> bool:
        """Page ``event`` through its route; False when no route (yet) catches it."""
        route = self.route_for(event)
        if route is None:
            return False
        incident = incident_key(route, event)
        if await self._handled(engine, incident, event):
            log.info("failure detector: %s of %s already paged (incident %r)", event.kind, event.dag_id, incident)
            return True
        context = {k: v for k, v in event.fields.items() if v is not None}
        context.update(
            kind=event.kind,
            severity=route.severity,
            route=route.label,
            detected_by="escalation-service",
            run_type=event.run_type,
        )
        if event.at is not None:
            context["failed_at"] = event.at.isoformat()
        result = await self._trigger(engine, incident, context, route.policy)
        if result.success:
            self.triggered += 1
        log.log(
            logging.INFO if result.success else logging.WARNING,
            "failure detector: %s of %s (run %s, task %s, try %s) -> route %r, incident %r: %s",
            event.kind,
            event.dag_id,
            event.run_id,
            event.task_id,
            event.try_number,
            route.label,
            incident,
            result.message or result.error,
        )
        return True

    async def _trigger(self, engine: Any, incident: str, context: dict[str, Any], policy: str) -> Any:
        """Through the service's one trigger path with its gates (``global_enabled``, capacity)."""
        from airflow_escalation.runtime.builder import trigger_with_gates

        return await trigger_with_gates(
            engine, self.service.policy_config, incident, context, policy, triggered_by=DETECTOR_ACTOR
        )

    async def _resolve(self, engine: Any, success: FailureEvent) -> None:
        keys = set()
        for kind in _RESOLVES.get(success.kind, ()):
            as_failure = _as_kind(success, kind)
            route = self.routes.route_for(as_failure)
            if route is not None and route.resolve_on_success:
                keys.add(incident_key(route, as_failure))
        for key in sorted(keys):
            records = await engine.store_calls(engine.store.get_by_incident, key)
            for record in records:
                state = getattr(record.state, "value", record.state)
                if record.dag_id != success.dag_id or state not in OPEN_STATE_VALUES:
                    continue
                if success.at is not None and record.created_at > success.at:
                    continue  # opened after this success: a later failure
                what = f"{success.dag_id}" + (f".{success.task_id}" if success.task_id else "")
                note = f"resolved by the success of {what} (run {success.run_id}, try {success.try_number})"
                result = await engine.resolve(record.id, DETECTOR_ACTOR, note[: bounds.MAX_NOTE])
                if result.success:
                    self.resolved += 1
                    log.info("failure detector: %s; escalation %s resolved", note, record.id)

    def status(self) -> dict[str, Any]:
        return {
            "running": self._task is not None and not self._task.done(),
            "routes": len(self.routes.routes),
            "interval_seconds": self.settings.interval_seconds,
            "ticks": self.ticks,
            "triggered": self.triggered,
            "resolved": self.resolved,
            "last_error": self.last_error,
        }


def _heartbeat_margin() -> timedelta:
    """How long before its end a failed try may have last heartbeated: a try failed by the
    scheduler for missing heartbeats (its worker died) ended ``task_instance_heartbeat_timeout``
    plus a detection interval after its last one."""
    try:
        from airflow.configuration import conf

        timeout = conf.getfloat("scheduler", "task_instance_heartbeat_timeout", fallback=300)
        interval = conf.getfloat("scheduler", "task_instance_heartbeat_timeout_detection_interval", fallback=10)
    except Exception:  # noqa: BLE001 - outside Airflow: Airflow's defaults
        timeout, interval = 300.0, 10.0
    return timedelta(seconds=timeout + interval + 60)


def _after(iso: str, since: datetime) -> bool:
    try:
        return bool(iso) and datetime.fromisoformat(iso) >= since
    except ValueError:
        return False


def _as_kind(event: FailureEvent, kind: str) -> FailureEvent:
    return replace(
        event,
        kind=kind,
        # a success resolves the incident whatever try its route started paging from
        try_number=bounds.MAX_ROUTE_TRY if kind == TASK_UP_FOR_RETRY else event.try_number,
    )


async def start_detection(service: Any) -> None:
    """Read the routes of ``service``'s policies file and start the detector (the service's
    lifespan calls it once the engine runs). A bad route is the service's error (``/health``)."""
    from airflow_escalation.detection.routes import RouteError, parse_routes

    engine = service.engine
    try:
        service.routes = parse_routes(service.policy_config.routes, set(engine.policies))
    except RouteError as exc:
        service._error(f"[escalation] policies_file: {exc}; no failure routes are used")
        return
    for warning in service.routes.warnings:
        log.warning("escalation service: %s", warning)
    try:
        settings = load_detector_settings()
    except Exception as exc:  # noqa: BLE001 - EscalationConfigError names the option
        service._error(str(exc))
        return
    if not settings.enabled or not service.routes:
        log.info("failure detector off (%s)", "no routes" if settings.enabled else "detect_failures = false")
        return
    if service.detector is not None:  # a revision applied meanwhile started it (service/live_sections.py)
        service.detector.routes = service.routes
        return
    service.detector = FailureDetector(service, service.routes, settings)
    service.detector.start()


__all__ = ["DETECTOR_ACTOR", "DetectorSettings", "FailureDetector", "load_detector_settings", "start_detection"]
