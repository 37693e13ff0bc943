"""Applying the Alembic migrations from code (``trainserve migrate``, ``trainserve up``, the tests)."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str:
    """The revision this release's code needs."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at; None before the first migration (or when it cannot be read)."""
    from service.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def wait_until_migrated(database_url: str, timeout: float, every: float = 2.0) -> str:
    """Wait until the database is at this release's head revision, which the migration Job applies: a new
    pod starts serving only after its schema is there. Returns the revision; TimeoutError says what it saw."""
    head, seen, deadline = head_revision(), "unreachable", time.monotonic() + timeout
    while True:
        try:
            seen = current_revision(database_url) or "not migrated"
        except Exception as exc:  # the database may not answer yet; keep waiting
            seen = f"unreachable ({type(exc).__name__}: {exc})"
        if seen == head:
            return head
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the database is at {seen}, this release needs revision {head}: run "
                               "`trainserve migrate` (on Kubernetes, the trainserve-migrate Job) and check its log")
        time.sleep(every)
