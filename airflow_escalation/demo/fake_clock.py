"""`make demo-clock`: the spec's complete example on the embedded SQLite store and a fast clock.

Three incidents are triggered at 09:00 under ``production_critical``; one is never acknowledged,
one is acknowledged at 09:12, one is resolved at 09:20; a low-severity one is filtered out and
a repeated failure joins the open escalation. The clock is a FakeClock moved two hours forward
in milliseconds; every notification is printed as it goes out, then each record's timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_escalation.core.clock import FakeClock
from airflow_escalation.runtime.builder import build_engine
from airflow_escalation.runtime.policy_config import EscalationPolicyConfig
from airflow_escalation.core.models import (
    EscalationLevel,
    EscalationRecord,
    EscalationTarget,
)
from airflow_escalation.demo import POLICY_FILE

START = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)


def _clock_text(clock: FakeClock) -> str:
    minutes = (clock.now() - START).total_seconds() / 60
    return f"{clock.now():%H:%M} (+{minutes:4.0f} min)"


async def run(db_path: str, policies_file: Path) -> None:
    config = EscalationPolicyConfig.from_yaml(policies_file)
    clock = FakeClock(START)

    async def notify(record: EscalationRecord, level: EscalationLevel, targets: list[EscalationTarget]) -> bool:
        for target in targets:
            print(
                f"  {_clock_text(clock)}  level {level.level}  -> {target.display_name:<22} "
                f"[{target.key}]  incident {record.incident_id}"
            )
        return True

    config.store_type, config.store_config = "sqlite", {"db_path": db_path}
    engine = build_engine(config, clock=clock, handler=notify)
    await engine.start()
    print(f"policies from {policies_file}; store: SQLite at {db_path}\n")

    context = {"severity": "critical", "checkpoint_name": "production_validation"}
    never_acked = await engine.trigger("orders-nightly", context, "production_critical")
    acked = await engine.trigger("customers-freshness", context, "production_critical")
    resolved = await engine.trigger("payments-nulls", {**context, "severity": "high"}, "production_critical")
    low = await engine.trigger("marketing-typo", {"severity": "low"}, "production_critical")
    print(f"\n  low-severity incident: {low.message}")
    await engine.drain()

    await engine.advance(timedelta(minutes=7))
    again = await engine.trigger("orders-nightly", context, "production_critical")
    print(f"  {_clock_text(clock)}  orders-nightly failed again: {again.message}")
    await engine.advance(timedelta(minutes=5))
    await engine.acknowledge(acked.record.id, acknowledged_by="alice")
    print(f"  {_clock_text(clock)}  alice acknowledged customers-freshness: its paging stops")
    await engine.advance(timedelta(minutes=8))
    await engine.resolve(resolved.record.id, resolved_by="bob")
    print(f"  {_clock_text(clock)}  bob resolved payments-nulls")
    await engine.advance(timedelta(minutes=100))

    print("\nTimelines:")
    for result in (never_acked, acked, resolved):
        record = engine.get_record(result.record.id)
        print(
            f"\n  {record.incident_id}: {record.state} at level {record.current_level}, "
            f"{record.notification_count} notifications"
        )
        for event in record.history:
            details = event.get("details", {})
            extra = ", ".join(f"{k}={v}" for k, v in details.items())
            print(f"    {event['at'][11:16]}  {event['event']:<18} by {event['actor']:<8} {extra}")

    stats = engine.get_stats()
    print(
        f"\nStats: {stats.total_escalations} escalations, {stats.active_escalations} still paging, "
        f"ack rate {stats.acknowledgment_rate:.0%}, resolution rate {stats.resolution_rate:.0%}, "
        f"mean time to acknowledge {stats.avg_time_to_acknowledge_seconds / 60:.0f} min, "
        f"{stats.notifications_sent} notifications sent"
    )
    await engine.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="SQLite file (default: a fresh temporary file)")
    parser.add_argument("--policies", type=Path, default=POLICY_FILE)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.db or str(Path(tmp) / "escalations.db"), args.policies))


if __name__ == "__main__":
    main()
