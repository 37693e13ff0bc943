"""Every schema change is a migration: up to head and back to base on SQLite and PostgreSQL, and the
tables the code declares match what the migrations build."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.db import make_engine
from service.migrate import downgrade, upgrade
from service.tables import Base

TABLES = {"alembic_version", "datasets", "jobs", "job_metrics", "models", "model_aliases"}


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrations.db'}"
    return request.getfixturevalue("postgres_url")


def test_upgrade_to_head_matches_the_tables_and_downgrades_to_base(database_url):
    engine = make_engine(database_url)
    try:
        downgrade(database_url, "base")  # the session's PostgreSQL database may already be at head
        upgrade(database_url)
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"the tables in service/tables.py differ from the migrations: {diff}"
        downgrade(database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(database_url)  # and up again, as a deploy after a rollback would
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()
