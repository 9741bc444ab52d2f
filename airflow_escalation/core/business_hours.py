"""Business-hours windows in a policy's IANA timezone (DST-safe), through pendulum.

A window is ``[start_hour, end_hour)`` local wall time on the policy's business days. Openings are
computed in local time and converted back to UTC, so a window opening at 09:00 opens at 09:00
local on both sides of a DST change. A local time skipped by DST (spring forward) resolves to the
first instant after the gap; a local time that happens twice (fall back) to the first of the two.
"""

from __future__ import annotations

from datetime import date, datetime

import pendulum
from pendulum.tz.exceptions import AmbiguousTime, NonExistingTime

from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.core.timeutil import UTC


def _local(policy: EscalationPolicy, when: datetime) -> pendulum.DateTime:
    return pendulum.instance(when).in_timezone(policy.zone)


def is_business_time(policy: EscalationPolicy, when: datetime) -> bool:
    local = _local(policy, when)
    return local.weekday() in policy.business_days and (
        policy.business_hours_start <= local.hour < policy.business_hours_end
    )


def _opening(policy: EscalationPolicy, day: date, hour: int) -> datetime:
    """``hour`` o'clock local time on ``day``, as an aware UTC datetime."""
    try:
        local = pendulum.datetime(
            day.year, day.month, day.day, hour, tz=policy.zone, fold=0, raise_on_unknown_times=True
        )
    except NonExistingTime:  # skipped by spring forward: the first instant after the gap
        local = pendulum.datetime(day.year, day.month, day.day, hour, tz=policy.zone, fold=1)
    except AmbiguousTime:  # repeated by fall back: the first of the two
        local = pendulum.datetime(day.year, day.month, day.day, hour, tz=policy.zone, fold=0)
    # a plain datetime, as everywhere else in the core (records, stores, comparisons)
    return datetime.fromtimestamp(local.timestamp(), tz=UTC)


def next_business_time(policy: EscalationPolicy, when: datetime) -> datetime:
    """``when`` if it lies inside the window, else the window's next opening (aware UTC)."""
    if is_business_time(policy, when):
        return when
    today = _local(policy, when).date()
    for offset in range(0, 8):
        day = today.add(days=offset)
        if day.weekday() not in policy.business_days:
            continue
        opening = _opening(policy, day, policy.business_hours_start)
        if opening >= when:
            return opening
    raise AssertionError("a policy with at least one business day always opens within a week")
