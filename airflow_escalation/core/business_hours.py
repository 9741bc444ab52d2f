"""Business-hours windows in a policy's IANA timezone (DST-safe).

A window is ``[start_hour, end_hour)`` local wall time on the policy's business days. Openings are
computed in local time and converted back to UTC, so a window opening at 09:00 opens at 09:00
local on both sides of a DST change. A local time skipped by DST (spring forward) resolves to the
first instant after the gap.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

from airflow_escalation.core.models import EscalationPolicy
from airflow_escalation.core.timeutil import UTC


def is_business_time(policy: EscalationPolicy, when: datetime) -> bool:
    local = when.astimezone(policy.zone)
    return local.weekday() in policy.business_days and (
        policy.business_hours_start <= local.hour < policy.business_hours_end
    )


def _local_to_utc(policy: EscalationPolicy, day: datetime, hour: int) -> datetime:
    naive = datetime.combine(day.date(), time(0)) + timedelta(hours=hour)
    local = naive.replace(tzinfo=policy.zone)
    # fold=0 picks the earlier of an ambiguous time; a nonexistent time round-trips forward
    as_utc = local.astimezone(UTC)
    if as_utc.astimezone(policy.zone).replace(tzinfo=None) < naive:
        as_utc = (naive.replace(tzinfo=policy.zone, fold=1)).astimezone(UTC)
    return as_utc


def next_business_time(policy: EscalationPolicy, when: datetime) -> datetime:
    """``when`` if it lies inside the window, else the window's next opening (aware UTC)."""
    if is_business_time(policy, when):
        return when
    local = when.astimezone(policy.zone)
    for offset in range(0, 8):
        day = local + timedelta(days=offset)
        if day.weekday() not in policy.business_days:
            continue
        opening = _local_to_utc(policy, day, policy.business_hours_start)
        if opening >= when:
            return opening
    raise AssertionError("a policy with at least one business day always opens within a week")
