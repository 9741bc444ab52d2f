"""Read what Airflow knows about failures from the metadata database (API server only).

Why a query and not listeners: in Airflow 3 ``on_task_instance_failed`` fires in the task runner
(the worker's task process) and ``on_dag_run_failed`` in the scheduler; the API server, where the
escalation service lives, sees neither (only failures marked by hand through the REST API).
The rows are the one place every component writes to, so the service reads them: each query
is bounded (``MAX_DETECT_BATCH`` rows, oldest first, by ``end_date``) and starts at a watermark
(:class:`Watermarks`), re-reading a short overlap so a transaction committed late is not missed.

Each row becomes a :class:`~airflow_escalation.detection.routes.FailureEvent` whose fields come
from the notifier's own builder (:func:`~airflow_escalation.notifications.incident.incident_fields`),
so an incident key renders the same whether the notifier or the service saw the failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, Optional

from airflow_escalation.detection.routes import (
    DAG_RUN_FAILED,
    DAG_RUN_OVER_DURATION,
    DEADLINE_MISSED,
    TASK_FAILED,
    TASK_OVER_DURATION,
    TASK_UP_FOR_RETRY,
    FailureEvent,
)
from airflow_escalation.notifications.incident import incident_fields

TI_STATE_KIND = {"failed": TASK_FAILED, "up_for_retry": TASK_UP_FOR_RETRY}


@dataclass
class TaskRow:
    """A task try as the notifier's context builder reads it (``ti``): from ``task_instance`` or
    ``task_instance_history`` (a try that was retried already lives only there)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: Optional[str]
    start_date: Optional[datetime]
    end_date: Optional[datetime]

    @property
    def log_url(self) -> str:
        from airflow.models.taskinstance import TaskInstance

        return TaskInstance.log_url.fget(self)  # type: ignore[attr-defined]  # Airflow's own link


@dataclass
class Watermarks:
    """Up to when each query has read (in memory; the store decides what was already paged)."""

    since: dict[str, datetime] = field(default_factory=dict)

    def get(self, name: str, default: datetime) -> datetime:
        return self.since.get(name, default)

    def advance(self, name: str, rows: list[Any], until: datetime, batch: int, attr: str = "end_date") -> None:
        # a full batch: continue after its last row next time; else everything up to `until` is read
        if len(rows) >= batch:
            self.since[name] = getattr(rows[-1], attr)
        else:
            self.since[name] = until


@dataclass
class DagInfo:
    tags: frozenset[str] = frozenset()
    owners: frozenset[str] = frozenset()


def dag_infos(session: Any, dag_ids: Iterable[str]) -> dict[str, DagInfo]:
    """Tags and owners of ``dag_ids`` (two queries), for routes matching on them."""
    from sqlalchemy import select

    from airflow.models.dag import DagModel, DagTag

    wanted = sorted(set(dag_ids))
    if not wanted:
        return {}
    infos = {dag_id: DagInfo() for dag_id in wanted}
    tags: dict[str, set[str]] = {}
    for dag_id, name in session.execute(select(DagTag.dag_id, DagTag.name).where(DagTag.dag_id.in_(wanted))):
        tags.setdefault(dag_id, set()).add(name)
    for dag_id, owners in session.execute(select(DagModel.dag_id, DagModel.owners).where(DagModel.dag_id.in_(wanted))):
        infos[dag_id] = DagInfo(
            frozenset(tags.get(dag_id, ())), frozenset(o.strip() for o in (owners or "").split(",") if o.strip())
        )
    for dag_id, names in tags.items():
        infos[dag_id] = DagInfo(frozenset(names), infos[dag_id].owners)
    return infos


def _task_event(kind: str, row: TaskRow, run_type: Optional[str], at: Optional[datetime]) -> FailureEvent:
    fields = incident_fields({"ti": row, "run_id": row.run_id})
    return FailureEvent(
        kind=kind,
        dag_id=row.dag_id,
        task_id=row.task_id,
        run_id=row.run_id,
        run_type=run_type,
        map_index=row.map_index,
        try_number=row.try_number,
        at=at,
        began=row.start_date,
        fields=fields,
    )


def _run_event(kind: str, run: Any, at: Optional[datetime], reason: str, extra: Optional[dict] = None) -> FailureEvent:
    context: dict[str, Any] = {"dag_run": run, "reason": reason, **(extra or {})}
    fields = incident_fields(context)
    began = at if kind == DEADLINE_MISSED else run.start_date
    return FailureEvent(
        kind=kind, dag_id=run.dag_id, run_id=run.run_id, run_type=run.run_type, at=at, began=began, fields=fields
    )


def _row(ti: Any) -> TaskRow:
    return TaskRow(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, ti.state, ti.start_date, ti.end_date)


@dataclass
class ScanResult:
    events: list[FailureEvent] = field(default_factory=list)
    successes: list[FailureEvent] = field(default_factory=list)  # kinds: the failure it resolves


class FailureScanner:
    """The bounded queries; one :meth:`scan` per tick, in a worker thread (blocking ORM)."""

    def __init__(self, *, batch: int, overlap: timedelta, start: datetime) -> None:
        self.batch = batch
        self.overlap = overlap
        self.start = start
        self.marks = Watermarks()

    def _since(self, name: str) -> datetime:
        return self.marks.get(name, self.start) - self.overlap

    def scan(
        self,
        now: datetime,
        kinds: set[str],
        over: dict[str, float],
        open_dag_ids: set[str],
    ) -> ScanResult:
        """Failures (of ``kinds``) since the watermarks; runs and tasks running longer than the
        shortest ``over`` seconds of their kind; successes of ``open_dag_ids`` (they resolve)."""
        from airflow.utils.session import create_session

        result = ScanResult()
        with create_session() as session:
            if kinds & {TASK_FAILED, TASK_UP_FOR_RETRY}:
                result.events += self._task_failures(session, now)
            if DAG_RUN_FAILED in kinds:
                result.events += self._run_failures(session, now)
            if DEADLINE_MISSED in kinds:
                result.events += self._deadlines(session, now)
            if TASK_OVER_DURATION in over:
                result.events += self._long_tasks(session, now, over[TASK_OVER_DURATION])
            if DAG_RUN_OVER_DURATION in over:
                result.events += self._long_runs(session, now, over[DAG_RUN_OVER_DURATION])
            if open_dag_ids:
                result.successes += self._successes(session, now, open_dag_ids)
            else:  # nothing open to resolve: successes until now need no reading later
                self.marks.since["ti_ok"] = self.marks.since["run_ok"] = now
            infos = dag_infos(session, {e.dag_id for e in result.events + result.successes})
        return ScanResult([_with_dag(e, infos) for e in result.events], [_with_dag(e, infos) for e in result.successes])

    # ------------------------------------------------------------------ the queries

    def _task_failures(self, session: Any, now: datetime) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH

        events: list[FailureEvent] = []
        for name, model in (("ti", TI), ("tih", TIH)):
            query = (
                select(model, DagRun.run_type)
                .join(DagRun, (DagRun.dag_id == model.dag_id) & (DagRun.run_id == model.run_id))
                .where(model.state.in_(tuple(TI_STATE_KIND)), model.end_date > self._since(name), model.end_date <= now)
                .order_by(model.end_date)
                .limit(self.batch)
            )
            rows = session.execute(query).all()
            self.marks.advance(name, [r[0] for r in rows], now, self.batch)
            for ti, run_type in rows:
                row = _row(ti)
                events.append(_task_event(TI_STATE_KIND[row.state or "failed"], row, run_type, row.end_date))
        return events

    def _run_failures(self, session: Any, now: datetime) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun

        query = (
            select(DagRun)
            .where(DagRun.state == "failed", DagRun.end_date > self._since("run"), DagRun.end_date <= now)
            .order_by(DagRun.end_date)
            .limit(self.batch)
        )
        runs = list(session.scalars(query))
        self.marks.advance("run", runs, now, self.batch)
        return [_run_event(DAG_RUN_FAILED, run, run.end_date, "failed") for run in runs]

    def _deadlines(self, session: Any, now: datetime) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.deadline import Deadline

        query = (
            select(Deadline, DagRun)
            .join(DagRun, DagRun.id == Deadline.dagrun_id)
            .where(Deadline.missed.is_(True), Deadline.last_updated_at > self._since("deadline"))
            .where(Deadline.last_updated_at <= now)
            .order_by(Deadline.last_updated_at)
            .limit(self.batch)
        )
        rows = session.execute(query).all()
        self.marks.advance("deadline", [r[0] for r in rows], now, self.batch, attr="last_updated_at")
        events = []
        for deadline, run in rows:
            extra = {"deadline": {"id": str(deadline.id), "deadline_time": deadline.deadline_time}}
            events.append(_run_event(DEADLINE_MISSED, run, deadline.deadline_time, "deadline_missed", extra))
        return events

    def _long_tasks(self, session: Any, now: datetime, seconds: float) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI

        query = (
            select(TI, DagRun.run_type)
            .join(DagRun, (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id))
            .where(TI.state == "running", TI.start_date <= now - timedelta(seconds=seconds))
            .order_by(TI.start_date)
            .limit(self.batch)
        )
        events = []
        for ti, run_type in session.execute(query).all():
            row = _row(ti)
            events.append(_task_event(TASK_OVER_DURATION, row, run_type, row.start_date))
        return events

    def _long_runs(self, session: Any, now: datetime, seconds: float) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun

        query = (
            select(DagRun)
            .where(DagRun.state == "running", DagRun.start_date <= now - timedelta(seconds=seconds))
            .order_by(DagRun.start_date)
            .limit(self.batch)
        )
        return [
            _run_event(DAG_RUN_OVER_DURATION, run, run.start_date, "over_duration") for run in session.scalars(query)
        ]

    def _successes(self, session: Any, now: datetime, dag_ids: set[str]) -> list[FailureEvent]:
        """Tasks and runs of ``dag_ids`` that succeeded since the watermark, as the failure kinds
        whose incidents they resolve."""
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI

        wanted = sorted(dag_ids)[: self.batch]
        query = (
            select(TI, DagRun.run_type)
            .join(DagRun, (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id))
            .where(TI.state == "success", TI.dag_id.in_(wanted))
            .where(TI.end_date > self._since("ti_ok"), TI.end_date <= now)
            .order_by(TI.end_date)
            .limit(self.batch)
        )
        rows = session.execute(query).all()
        self.marks.advance("ti_ok", [r[0] for r in rows], now, self.batch)
        events = [_task_event(TASK_FAILED, _row(ti), run_type, ti.end_date) for ti, run_type in rows]
        runs_query = (
            select(DagRun)
            .where(DagRun.state == "success", DagRun.dag_id.in_(wanted))
            .where(DagRun.end_date > self._since("run_ok"), DagRun.end_date <= now)
            .order_by(DagRun.end_date)
            .limit(self.batch)
        )
        runs = list(session.scalars(runs_query))
        self.marks.advance("run_ok", runs, now, self.batch)
        events += [_run_event(DAG_RUN_FAILED, run, run.end_date, "success") for run in runs]
        return events


def _with_dag(event: FailureEvent, infos: dict[str, DagInfo]) -> FailureEvent:
    info = infos.get(event.dag_id, DagInfo())
    return FailureEvent(
        kind=event.kind,
        dag_id=event.dag_id,
        task_id=event.task_id,
        run_id=event.run_id,
        run_type=event.run_type,
        map_index=event.map_index,
        try_number=event.try_number,
        tags=info.tags,
        owners=info.owners,
        at=event.at,
        began=event.began,
        fields=event.fields,
    )


__all__ = ["FailureScanner", "ScanResult", "TaskRow", "Watermarks", "dag_infos"]
