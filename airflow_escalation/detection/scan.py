"""Read what Airflow knows about failures from the metadata database (API server only).

Why a query and not listeners: in Airflow 3 ``on_task_instance_failed`` fires in the task runner
(the worker's task process) and ``on_dag_run_failed`` in the scheduler; the API server, where the
escalation service lives, sees neither (only failures marked by hand through the REST API).
The rows are the one place every component writes to, so the service reads them: each query
is bounded (``MAX_DETECT_BATCH`` rows, oldest first, by ``end_date``), reads through one of
Airflow's indexes (see :class:`FailureScanner`) and starts at a watermark (:class:`Watermarks`),
re-reading a short overlap so a transaction committed late is not missed.

Each row becomes a :class:`~airflow_escalation.detection.routes.FailureEvent` whose fields come
from the notifier's own builder (:func:`~airflow_escalation.notifications.incident.incident_fields`),
so an incident key renders the same whether the notifier or the service saw the failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    """The bounded queries; one :meth:`scan` per tick, in a worker thread (blocking ORM).

    Every query reads through one of Airflow's indexes, so its cost follows what is happening
    now, not the size of the history: task tries by ``last_heartbeat_at`` (``ti_heartbeat``: a
    try heartbeats while it runs, and one failed for missing heartbeats has its last one within
    ``heartbeat_margin`` of its end), runs through the queued and running ones (``idx_dag_run_queued_dags``,
    ``idx_dag_run_running_dags``: a run that left them since the last tick is read by its id), retried tries through the running
    runs (``idx_tih_dag_run``), Deadlines by ``(missed, deadline_time)``, running tasks by state.
    """

    def __init__(self, *, batch: int, overlap: timedelta, start: datetime, heartbeat_margin: timedelta) -> None:
        self.batch = batch
        self.overlap = overlap
        self.start = start
        self.heartbeat_margin = heartbeat_margin
        self.marks = Watermarks()
        self._running: Optional[dict[int, Any]] = None  # run id -> its row, as of the last tick

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
            running = self._running_runs(session)
            if kinds & {TASK_FAILED, TASK_UP_FOR_RETRY}:
                result.events += self._task_failures(session, now, running)
            ended = self._ended_runs(session, now, running, with_catch_up=DAG_RUN_FAILED in kinds)
            if DAG_RUN_FAILED in kinds:
                result.events += [
                    _run_event(DAG_RUN_FAILED, run, run.end_date, "failed") for run in ended if run.state == "failed"
                ]
            if DEADLINE_MISSED in kinds:
                result.events += self._deadlines(session, now)
            if TASK_OVER_DURATION in over:
                result.events += self._long_tasks(session, now, over[TASK_OVER_DURATION])
            if DAG_RUN_OVER_DURATION in over:
                limit = now - timedelta(seconds=over[DAG_RUN_OVER_DURATION])
                result.events += [
                    _run_event(DAG_RUN_OVER_DURATION, run, run.start_date, "over_duration")
                    for run in running.values()
                    if run.start_date is not None and run.start_date <= limit
                ][: self.batch]
            if open_dag_ids:
                result.successes += self._task_successes(session, now, open_dag_ids)
                result.successes += [
                    _run_event(DAG_RUN_FAILED, run, run.end_date, "success")
                    for run in ended
                    if run.state == "success" and run.dag_id in open_dag_ids
                ]
            else:  # nothing open to resolve: successes until now need no reading later
                self.marks.since["ti_ok"] = now
            self._running = running
            infos = dag_infos(session, {e.dag_id for e in result.events + result.successes})
        return ScanResult([_with_dag(e, infos) for e in result.events], [_with_dag(e, infos) for e in result.successes])

    # ------------------------------------------------------------------ the queries

    def _running_runs(self, session: Any) -> dict[int, Any]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun

        runs: dict[int, Any] = {}
        # queued too: a run that fails within a tick of starting was queued at the tick before;
        # one query per state, each through its partial index
        for state in ("queued", "running"):
            query = select(DagRun.id, DagRun.dag_id, DagRun.run_id, DagRun.run_type, DagRun.start_date).where(
                DagRun.state == state
            )
            runs.update((row.id, row) for row in session.execute(query))
        return runs

    def _ended_runs(self, session: Any, now: datetime, running: dict[int, Any], with_catch_up: bool) -> list[Any]:
        """Runs that were running at the last tick and are not now (the first tick after a start:
        the failed runs that ended within the lookback, one query without an index)."""
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun

        if self._running is None:
            if not with_catch_up:
                return []
            query = (
                select(DagRun)
                .where(DagRun.state == "failed", DagRun.end_date > self._since("run"), DagRun.end_date <= now)
                .order_by(DagRun.end_date)
                .limit(self.batch)
            )
            return list(session.scalars(query))
        gone = sorted(set(self._running) - set(running))
        ended: list[Any] = []
        for chunk in range(0, len(gone), self.batch):
            ended += session.scalars(select(DagRun).where(DagRun.id.in_(gone[chunk : chunk + self.batch])))
        return [run for run in ended if run.state in ("failed", "success")]

    def _task_failures(self, session: Any, now: datetime, running: dict[int, Any]) -> list[FailureEvent]:
        from sqlalchemy import select, tuple_

        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.models.taskinstancehistory import TaskInstanceHistory as TIH

        states = tuple(TI_STATE_KIND)
        since = self._since("ti")
        query = (
            select(TI, DagRun.run_type)
            .join(DagRun, (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id))
            .where(TI.last_heartbeat_at > since - self.heartbeat_margin)
            .where(TI.state.in_(states), TI.end_date > since, TI.end_date <= now)
            .order_by(TI.end_date)
            .limit(self.batch)
        )
        rows = session.execute(query).all()
        self.marks.advance("ti", [r[0] for r in rows], now, self.batch)
        events = []
        for ti, run_type in rows:
            row = _row(ti)
            events.append(_task_event(TI_STATE_KIND[row.state or "failed"], row, run_type, row.end_date))
        # a try retried already lives in task_instance_history, and its run is still running
        keys = [(run.dag_id, run.run_id) for run in running.values()]
        run_types = {(run.dag_id, run.run_id): run.run_type for run in running.values()}
        since = self._since("tih")
        history: list[Any] = []
        for chunk in range(0, len(keys), self.batch):
            history += session.scalars(
                select(TIH)
                .where(tuple_(TIH.dag_id, TIH.run_id).in_(keys[chunk : chunk + self.batch]))
                .where(TIH.state.in_(states), TIH.end_date > since, TIH.end_date <= now)
                .order_by(TIH.end_date)
                .limit(self.batch)
            )
        self.marks.since["tih"] = now
        for tih in history[: self.batch]:
            row = _row(tih)
            run_type = run_types.get((row.dag_id, row.run_id))
            events.append(
                _task_event(_history_kind(row.state, row.try_number, tih.max_tries), row, run_type, row.end_date)
            )
        return events

    def _deadlines(self, session: Any, now: datetime) -> list[FailureEvent]:
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.deadline import Deadline

        # the scheduler marks a deadline missed shortly after its time: read by (missed, time)
        since = self._since("deadline") - self.heartbeat_margin
        query = (
            select(Deadline, DagRun)
            .join(DagRun, DagRun.id == Deadline.dagrun_id)
            .where(Deadline.missed.is_(True), Deadline.deadline_time > since, Deadline.deadline_time <= now)
            .order_by(Deadline.deadline_time)
            .limit(self.batch)
        )
        rows = session.execute(query).all()
        self.marks.advance("deadline", [r[0] for r in rows], now, self.batch, attr="deadline_time")
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

    def _task_successes(self, session: Any, now: datetime, dag_ids: set[str]) -> list[FailureEvent]:
        """Tasks of ``dag_ids`` that succeeded since the watermark, as the failure kind whose
        incidents they resolve."""
        from sqlalchemy import select

        from airflow.models.dagrun import DagRun
        from airflow.models.taskinstance import TaskInstance as TI

        wanted = sorted(dag_ids)[: self.batch]
        since = self._since("ti_ok")
        query = (
            select(TI, DagRun.run_type)
            .join(DagRun, (DagRun.dag_id == TI.dag_id) & (DagRun.run_id == TI.run_id))
            .where(TI.last_heartbeat_at > since - self.heartbeat_margin)
            .where(TI.state == "success", TI.dag_id.in_(wanted), TI.end_date > since, TI.end_date <= now)
            .order_by(TI.end_date)
            .limit(self.batch)
        )
        rows = session.execute(query).all()
        self.marks.advance("ti_ok", [r[0] for r in rows], now, self.batch)
        return [_task_event(TASK_FAILED, _row(ti), run_type, ti.end_date) for ti, run_type in rows]


def _history_kind(state: Optional[str], try_number: int, max_tries: Optional[int]) -> str:
    """The kind of a try read from ``task_instance_history``. Airflow records a try that was up
    for retry there as ``failed`` (``TaskInstanceHistory.record_ti``: a state not finished becomes
    failed), so a failed try that still had retries left (``try_number <= max_tries``, Airflow's
    own test for a retry) was up for retry, not the task's final failure."""
    if (state or "failed") == "failed" and max_tries is not None and try_number <= max_tries:
        return TASK_UP_FOR_RETRY
    return TI_STATE_KIND[state or "failed"]


def _with_dag(event: FailureEvent, infos: dict[str, DagInfo]) -> FailureEvent:
    info = infos.get(event.dag_id, DagInfo())
    return replace(event, tags=info.tags, owners=info.owners)


__all__ = ["FailureScanner", "ScanResult", "TaskRow", "Watermarks", "dag_infos"]
