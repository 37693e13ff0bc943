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


def current_revision(database_url: str, entra: bool = False) -> str | None:
    """The revision the database is at; None before the first migration (or when it cannot be read).
    ``entra``: log in with Microsoft Entra tokens (TRAINSERVE_DATABASE_AUTH=entra)."""
    from service.platform.db import make_engine

    engine = make_engine(database_url, entra=entra)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_newer_release(revision: str | None) -> bool:
    """A revision this release does not know: a later release's migration (they are additive, so this
    release's code still runs on it, which is what a rollback needs)."""
    if revision is None:
        return False
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is None
    except Exception:  # alembic raises for an id it has no script for
        return True


def migrate_to_head(database_url: str, entra: bool = False) -> str:
    """``trainserve migrate``: bring the database to this release's schema. A database already at a later
    release's schema is left alone (a rollback runs the older release's migration Job)."""
    current = current_revision(database_url, entra)
    if current is not None and is_newer_release(current):
        return f"the database is at {current}, a later release's schema; this release ({head_revision()}) runs on it"
    upgrade(database_url)
    return f"the database is at revision {head_revision()}"


def wait_until_migrated(database_url: str, timeout: float, every: float = 2.0, entra: bool = False) -> str:
    """Wait until the database is at this release's head revision, which the migration Job applies: a new
    pod starts serving only after its schema is there (or a later release's, after a rollback). Returns the
    revision; TimeoutError says what it saw."""
    head, seen, deadline = head_revision(), "unreachable", time.monotonic() + timeout
    while True:
        try:
            seen = current_revision(database_url, entra) or "not migrated"
        except Exception as exc:  # the database may not answer yet; keep waiting
            seen = f"unreachable ({type(exc).__name__}: {exc})"
        if seen == head or (not seen.startswith(("unreachable", "not migrated")) and is_newer_release(seen)):
            return seen
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the database is at {seen}, this release needs revision {head}: run "
                               "`trainserve migrate` (on Kubernetes, the trainserve-migrate Job) and check its log")
        time.sleep(every)
