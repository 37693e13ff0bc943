from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, text

from service.http.errors import Unavailable, errors
from service.platform.artifacts import ArtifactStore
from service.platform.queue import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


def database_reachable(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


CHECK_SECONDS = 3.0  # a dependency that has not answered by then counts as unreachable


def artifacts_reachable(store: ArtifactStore) -> bool:
    try:
        store.exists("readyz")  # a missing key is an answer; an error or a hang is not
        return True
    except Exception:
        return False


async def _check(fn, *args) -> bool:
    try:
        return await asyncio.wait_for(run_in_threadpool(fn, *args), CHECK_SECONDS)
    except asyncio.TimeoutError:
        return False


def _ready_or_503(checks: dict[str, bool], extra: dict | None = None) -> dict:
    if not all(checks.values()):
        down = [name for name, ok in checks.items() if not ok]
        raise Unavailable(f"not ready: {', '.join(down)} unreachable",
                          details=[{"field": k, "message": "ok" if v else "unreachable"} for k, v in checks.items()])
    return {"status": "ready", "checks": {k: "ok" for k in checks}, **(extra or {})}


@router.get("/readyz", responses=errors(503))
async def readyz(request: Request) -> dict:
    """Ready to serve predictions: the database (the registry) and the artifact store answer; 503 names the
    one that does not. The broker only carries training jobs, so it does not take inference out of service:
    its state is reported under `jobs` (see `/readyz/jobs`)."""
    runtime = request.app.state.runtime
    database, artifacts, broker = await asyncio.gather(
        _check(database_reachable, runtime.engine), _check(artifacts_reachable, runtime.store),
        _check(broker_reachable, runtime.celery))
    return _ready_or_503({"database": database, "artifacts": artifacts},
                         {"jobs": {"broker": "ok" if broker else "unreachable"}})


@router.get("/readyz/jobs", responses=errors(503))
async def readyz_jobs(request: Request) -> dict:
    """Ready to accept training jobs: the database and the broker answer; 503 names the one that does not.
    (A job submitted while the broker is down is still kept, queued, and sent once it is back.)"""
    runtime = request.app.state.runtime
    database, broker = await asyncio.gather(_check(database_reachable, runtime.engine),
                                            _check(broker_reachable, runtime.celery))
    return _ready_or_503({"database": database, "broker": broker})
