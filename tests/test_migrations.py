"""Every schema change is a migration: up to head and back to base on SQLite and PostgreSQL, and the
tables the code declares match what the migrations build."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from service.platform.db import POSTGRES_ENTRA_SCOPE, make_engine
from service.platform.migrate import downgrade, head_revision, upgrade
from service.platform.settings import Settings
from service.platform.tables import Base

TABLES = {"alembic_version", "datasets", "jobs", "job_metrics", "job_events", "models", "model_aliases", "api_keys",
          "audit_events", "idempotent_requests", "sweeps",
          "sweep_events", "rollouts", "rollout_events", "rollout_counts", "predictions", "monitoring_settings",
          "drift_counts", "retraining_policies", "retraining_events"}


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
        assert diff == [], f"the tables in service/platform/tables.py differ from the migrations: {diff}"
        downgrade(database_url, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(database_url)  # and up again, as a deploy after a rollback would
        assert set(inspect(engine).get_table_names()) == TABLES
    finally:
        engine.dispose()


def _cli(*args: str, database_url: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSERVE_")}
    env.update(TRAINSERVE_DATABASE_URL=database_url, TRAINSERVE_ENV_FILE="")
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_pod_waits_for_the_migration_before_serving(database_url):
    """`trainserve wait-for-migrations`, the init container of every Deployment in deploy/k8s: it returns once
    the migration Job has brought the database to this release's head, and fails with the reason if never."""
    downgrade(database_url, "base")
    _, err = _cli("wait-for-migrations", "--timeout", "0.5", database_url=database_url).communicate(timeout=120)
    assert f"needs revision {head_revision()}" in err and "trainserve migrate" in err

    waiting = _cli("wait-for-migrations", "--timeout", "120", database_url=database_url)
    upgrade(database_url)
    out, err = waiting.communicate(timeout=150)
    assert waiting.returncode == 0, err
    assert f"at revision {head_revision()}" in out


class StandInEntra:
    """Microsoft Entra ID does not run here: this hands out tokens as azure-identity's credentials do. The
    local PostgreSQL trusts every login, so the token is taken and the connection opens."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str):
        self.scopes.extend(scopes)
        return SimpleNamespace(token=f"token-{len(self.scopes)}", expires_on=0)


@pytest.mark.realstack
def test_entra_login_asks_for_a_postgresql_token_on_every_new_connection(postgres_url):
    credential = StandInEntra()
    engine = make_engine(postgres_url, credential=credential)
    try:
        for _ in range(2):
            with engine.connect() as connection:
                assert connection.exec_driver_sql("select 1").scalar() == 1
            engine.dispose()  # the next connect is a new login
    finally:
        engine.dispose()
    assert credential.scopes == [POSTGRES_ENTRA_SCOPE] * 2


def test_entra_login_needs_postgresql():
    with pytest.raises(ValueError, match="TRAINSERVE_DATABASE_AUTH=entra"):
        Settings(database_url="sqlite:///x.db", database_auth="entra", _env_file=None)


def test_after_a_rollback_the_older_release_runs_on_the_newer_schema(database_url):
    """A later release's migration is additive: rolling back to this release (its migration Job, then its
    pods' wait) leaves the later schema alone and starts serving on it."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_later_release'")
        out, err = (process := _cli("migrate", database_url=database_url)).communicate(timeout=120)
        assert process.returncode == 0, err
        assert "9999_later_release, a later release's schema" in out
        out, err = (process := _cli("wait-for-migrations", "--timeout", "30", database_url=database_url)).communicate(timeout=120)
        assert process.returncode == 0, err
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{head_revision()}'")
        engine.dispose()
