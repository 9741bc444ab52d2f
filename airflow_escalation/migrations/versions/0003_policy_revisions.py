"""Policies as data: the revisions of the policies document.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from airflow_escalation.stores.sql_schema import NAME, JSONDocument, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
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
