"""Create the on-call table: silences, overrides and delivery resolutions (docs/oncall.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Frozen: the column types and lengths as this revision created them (see 0001), not imported
# from the live schema, so that a later change there cannot rewrite what this revision did.
NAME = 255
ONCALL_KIND = 32
ONCALL_ID = 255
# aware UTC datetimes: timestamptz on PostgreSQL, DATETIME(6) on MySQL/MariaDB, DATETIME on SQLite
UTCDateTime = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSONDocument = sa.JSON()

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    # a SQL store that makes its own tables creates this one on first use: it may already be there
    if "escalation_oncall" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "escalation_oncall",
        sa.Column("kind", sa.String(ONCALL_KIND), primary_key=True),
        sa.Column("id", sa.String(ONCALL_ID), primary_key=True),
        sa.Column("scope", sa.String(NAME), nullable=False),
        sa.Column("starts_at", UTCDateTime, nullable=False),
        sa.Column("ends_at", UTCDateTime, nullable=False),
        sa.Column("data", JSONDocument, nullable=False),
    )
    op.create_index("ix_escalation_oncall_ends", "escalation_oncall", ["kind", "ends_at"])
    op.create_index("ix_escalation_oncall_scope", "escalation_oncall", ["kind", "scope", "starts_at"])


def downgrade():
    op.drop_table("escalation_oncall")
