"""Alembic environment: the database URL comes from trainserve's settings unless the caller set one."""

from __future__ import annotations

from alembic import context

from service.platform.db import make_engine
from service.platform.settings import load_settings
from service.platform.tables import Base

config = context.config
target_metadata = Base.metadata
settings = load_settings()
url = config.get_main_option("sqlalchemy.url") or settings.database_url
# Entra logins (TRAINSERVE_DATABASE_AUTH=entra) for the migrate job on AKS as for the app.
entra = settings.database_auth == "entra" and url.startswith("postgresql")


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url, entra=entra)
    try:
        with engine.connect() as connection:
            # render_as_batch: SQLite alters a table only by copying it, which batch mode does for us.
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
