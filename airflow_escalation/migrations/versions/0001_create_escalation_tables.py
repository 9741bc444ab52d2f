"""Create the escalation tables: records, their history, and the delivery outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Frozen: the column types and lengths as this revision created them, written out here rather
# than imported from the live schema (stores/sql_schema.py), so that a later change there cannot
# rewrite what this revision did. A schema change is a new revision.
RECORD_ID = 64
DELIVERY_ID = 255
NAME = 255
OPEN_KEY = 64
TARGET_KEY = 512
# aware UTC datetimes: timestamptz on PostgreSQL, DATETIME(6) on MySQL/MariaDB, DATETIME on SQLite
UTCDateTime = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSONDocument = sa.JSON()

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "escalation_record",
        sa.Column("id", sa.String(RECORD_ID), primary_key=True),
        sa.Column("incident_id", sa.String(NAME), nullable=False),
        sa.Column("policy_name", sa.String(NAME), nullable=False),
        sa.Column("current_level", sa.Integer, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("acknowledged_at", UTCDateTime),
        sa.Column("acknowledged_by", sa.String(NAME)),
        sa.Column("resolved_at", UTCDateTime),
        sa.Column("resolved_by", sa.String(NAME)),
        sa.Column("next_escalation_at", UTCDateTime),
        sa.Column("escalation_count", sa.Integer, nullable=False),
        sa.Column("notification_count", sa.Integer, nullable=False),
        sa.Column("context", JSONDocument, nullable=False),
        sa.Column("metadata", JSONDocument, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("trigger_type", sa.String(64), nullable=False),
        sa.Column("policy_snapshot", JSONDocument, nullable=False),
        sa.Column("level_fired_at", UTCDateTime),
        sa.Column("repeats_sent", sa.Integer, nullable=False),
        sa.Column("next_action", sa.String(64)),
        sa.Column("notify_rounds", sa.Integer, nullable=False),
        sa.Column("closed_at", UTCDateTime),
        sa.Column("open_key", sa.String(OPEN_KEY), unique=True),
        sa.Column("lease_owner", sa.String(NAME)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("history_len", sa.Integer, nullable=False),
        sa.Column("dag_id", sa.String(NAME)),
    )
    is_open = sa.text("open_key IS NOT NULL")
    op.create_index(
        "ix_escalation_record_due",
        "escalation_record",
        ["next_escalation_at", "open_key"],
        postgresql_where=is_open,
        sqlite_where=is_open,
    )
    op.create_index(
        "ix_escalation_record_active", "escalation_record", ["state", "policy_name", "current_level", "created_at"]
    )
    op.create_index("ix_escalation_record_incident", "escalation_record", ["incident_id", "policy_name", "closed_at"])
    op.create_index("ix_escalation_record_closed", "escalation_record", ["closed_at"])
    op.create_index("ix_escalation_record_created", "escalation_record", ["created_at", "id"])
    op.create_index("ix_escalation_record_dag", "escalation_record", ["dag_id", "created_at"])

    op.create_table(
        "escalation_event",
        sa.Column("record_id", sa.String(RECORD_ID), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", UTCDateTime),
        sa.Column("event", JSONDocument, nullable=False),
    )

    op.create_table(
        "escalation_delivery",
        sa.Column("id", sa.String(DELIVERY_ID), primary_key=True),
        sa.Column("record_id", sa.String(RECORD_ID), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("target", JSONDocument, nullable=False),
        sa.Column("target_key", sa.String(TARGET_KEY), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("sent_at", UTCDateTime),
        sa.Column("lease_owner", sa.String(NAME)),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("last_error", sa.Text),
    )
    op.create_index("ix_escalation_delivery_record", "escalation_delivery", ["record_id", "seq"], unique=True)
    op.create_index("ix_escalation_delivery_due", "escalation_delivery", ["state", "next_attempt_at", "created_at"])
    op.create_index("ix_escalation_delivery_outcome", "escalation_delivery", ["state", "target_key"])


def downgrade():
    op.drop_table("escalation_delivery")
    op.drop_table("escalation_event")
    op.drop_table("escalation_record")
