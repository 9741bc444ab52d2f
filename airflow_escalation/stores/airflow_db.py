"""``EscalationDBManager``: lets ``airflow db migrate`` create and upgrade the escalation tables.

The tables are the SQL store's (``airflow_escalation.stores.sql_schema``), on their own
``MetaData`` with their own alembic version table. Airflow finds the manager through the
provider info's ``db-managers`` key (3.2+, the provider's floor).
"""

from __future__ import annotations

import airflow_escalation.version_compat  # noqa: F401  - refuses an Airflow older than the floor

from pathlib import Path

from sqlalchemy import inspect

from airflow.utils.db_manager import BaseDBManager
from airflow_escalation.stores import policy_revisions  # noqa: F401  - its table is on the same MetaData
from airflow_escalation.stores.sql_schema import metadata

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # airflow_escalation/


class EscalationDBManager(BaseDBManager):
    """Manages the ``escalation_*`` tables."""

    metadata = metadata
    version_table_name = "alembic_version_escalation"
    migration_dir = (PACKAGE_DIR / "migrations").as_posix()
    alembic_file = (PACKAGE_DIR / "alembic.ini").as_posix()
    supports_table_dropping = True
    # 0002 (on call) and 0003 (policy revisions) ship with the next release
    revision_heads_map = {"0.1.0": "0001", "0.2.0": "0003"}

    def drop_tables(self, connection) -> None:
        inspector = inspect(connection)
        for table in reversed(self.metadata.sorted_tables):
            if inspector.has_table(table.name):
                self.log.info("Dropping table %s", table.name)
                table.drop(connection)
        version = self._get_migration_ctx()._version
        if inspector.has_table(version.name):
            version.drop(connection)


def current_revision_is_head(connection) -> bool:
    """Whether the escalation tables are migrated to this package's head revision."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    config = Config(EscalationDBManager.alembic_file)
    config.set_main_option("script_location", EscalationDBManager.migration_dir)
    heads = set(ScriptDirectory.from_config(config).get_heads())
    context = MigrationContext.configure(connection, opts={"version_table": EscalationDBManager.version_table_name})
    return set(context.get_current_heads()) == heads
