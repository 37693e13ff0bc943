"""The engine for a database URL and the request-scoped transaction (sessions come from the process's
``Runtime``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session

# What Azure Database for PostgreSQL takes a Microsoft Entra token for, in place of a password.
POSTGRES_ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"


def use_entra_tokens(engine: Engine, credential=None) -> None:
    """Each new connection logs in with a fresh Microsoft Entra token as its password: on AKS the pod's
    workload identity (azure-identity's DefaultAzureCredential), so no database password exists anywhere.
    The credential caches a token until shortly before it expires."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()

    @event.listens_for(engine, "do_connect")
    def _token_as_password(_dialect, _record, _cargs, cparams) -> None:
        cparams["password"] = credential.get_token(POSTGRES_ENTRA_SCOPE).token


def make_engine(url: str, *, entra: bool = False, credential=None) -> Engine:
    """An engine for ``url``; with ``entra`` (TRAINSERVE_DATABASE_AUTH=entra) or a ``credential`` PostgreSQL
    logins use Microsoft Entra tokens."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # The API and the worker write the same file: WAL lets readers run beside the writer, and
            # the busy timeout makes a writer wait for the lock instead of failing with "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if entra or credential is not None:
        use_entra_tokens(engine, credential)
    return engine


def get_db(request: Request) -> Iterator[Session]:
    """The request owns the transaction; services only flush. A route that must act after the commit
    (enqueueing a job) commits itself first; the final commit here then has nothing left to do."""
    with request.app.state.runtime.sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_db)]
