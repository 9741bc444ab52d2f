"""Policies as data: the revisions of the policies document.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Frozen: the column types and lengths as this revision created them (see 0001), not imported
# from the live schema, so that a later change there cannot rewrite what this revision did.
NAME = 255
# aware UTC datetimes: timestamptz on PostgreSQL, DATETIME(6) on MySQL/MariaDB, DATETIME on SQLite
UTCDateTime = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
JSONDocument = sa.JSON()

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    # a SQL store that makes its own tables creates this one on first use: it may already be there
    if "escalation_policy_revision" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "escalation_policy_revision",
        sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("document", JSONDocument, nullable=False),
        sa.Column("author", sa.String(NAME), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("changes", JSONDocument, nullable=False),
    )


def downgrade():
    op.drop_table("escalation_policy_revision")
