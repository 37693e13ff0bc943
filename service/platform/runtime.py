"""What one process runs on: its settings, the database engine and its sessions, the artifact store and the
Celery app. Built once at each entry point (the app's factory, the worker's first task, the CLI) and passed
down; nothing below an entry point reads the environment. So two apps with different settings, databases
and stores can live side by side in one process (the tests do)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.platform.artifacts import ArtifactStore, open_store
from service.platform.db import make_engine
from service.platform.queue import make_celery
from service.platform.settings import Settings


class Runtime:
    """One process's settings and the clients built from them. The engine, the store and the Celery app are
    made on first use, so building a runtime connects nowhere and writes nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()  # a forked child builds its own (engines and broker connections do not cross a fork)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url, entra=self.settings.database_auth == "entra")

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return sessionmaker(self.engine, expire_on_commit=False)

    @cached_property
    def store(self) -> ArtifactStore:
        secret = self.settings.azure_storage_connection_string
        return open_store(self.settings.artifacts_url, secret.get_secret_value() if secret else None)

    @cached_property
    def celery(self) -> Celery:
        return make_celery(self.settings)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        with self.sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Close the database connections (the engine is made again if used after)."""
        if "engine" in self.__dict__:
            self.engine.dispose()


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
