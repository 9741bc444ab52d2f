"""The alembic migrations build exactly the tables the SQL store declares.

`airflow db migrate` creates a fresh install from the ORM metadata and upgrades an existing one
with the migration files; both paths must give the same schema.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from airflow_escalation.stores.airflow_db import EscalationDBManager, current_revision_is_head
from airflow_escalation.stores.sql_schema import metadata

POSTGRES_URL = os.environ.get("ESCALATION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _alembic_config(connection) -> Config:
    config = Config(EscalationDBManager.alembic_file)
    config.set_main_option("script_location", EscalationDBManager.migration_dir)
    config.attributes["connection"] = connection
    return config


def _differences(connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    # tables the metadata does not declare (the version table, Airflow's own) are not ours
    return [diff for diff in compare_metadata(context, metadata) if diff[0] != "remove_table"]


def _upgrade_and_compare(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        assert not current_revision_is_head(connection)
        command.upgrade(_alembic_config(connection), "head")
    with engine.begin() as connection:
        assert current_revision_is_head(connection)
        assert _differences(connection) == []
        command.upgrade(_alembic_config(connection), "head")  # a second upgrade is a no-op
        assert current_revision_is_head(connection)
    with engine.begin() as connection:
        command.downgrade(_alembic_config(connection), "base")
        assert not set(metadata.tables) & set(sa.inspect(connection).get_table_names())


def test_migration_files_match_the_store_schema_on_sqlite(tmp_path):
    _upgrade_and_compare(sa.create_engine(f"sqlite:///{tmp_path / 'migrated.db'}"))


@pytest.mark.postgres
def test_migration_files_match_the_store_schema_on_postgres():
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"PostgreSQL is unreachable at {POSTGRES_URL}")
    schema = "escalation_migration_test"
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    scoped = sa.create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        _upgrade_and_compare(scoped)
    finally:
        scoped.dispose()
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()
