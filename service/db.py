"""Engine, sessions and the request-scoped transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Annotated

from fastapi import Depends
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings


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


def make_engine(url: str, credential=None) -> Engine:
    """An engine for ``url``; with TRAINSERVE_DATABASE_AUTH=entra (or a ``credential``) PostgreSQL logins
    use Microsoft Entra tokens."""
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
    if credential is not None or get_settings().database_auth == "entra":
        use_entra_tokens(engine, credential)
    return engine


@lru_cache
def get_engine() -> Engine:
    return make_engine(get_settings().database_url)


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    with get_sessionmaker()() as session, session.begin():
        yield session


def get_db() -> Iterator[Session]:
    """The request owns the transaction; services only flush. A route that must act after the commit
    (enqueueing a job) commits itself first; the final commit here then has nothing left to do."""
    with get_sessionmaker()() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_db)]
