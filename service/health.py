from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import text

from service.db import get_engine
from service.errors import Unavailable
from service.queue import broker_reachable

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """The process is up."""
    return {"status": "ok"}


def database_reachable() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@router.get("/readyz")
async def readyz() -> dict:
    """The database and the broker answer; 503 names the one that does not."""
    checks = {"database": await run_in_threadpool(database_reachable),
              "broker": await run_in_threadpool(broker_reachable)}
    if not all(checks.values()):
        down = [name for name, ok in checks.items() if not ok]
        raise Unavailable(f"not ready: {', '.join(down)} unreachable",
                          details=[{"field": k, "message": "ok" if v else "unreachable"} for k, v in checks.items()])
    return {"status": "ready", "checks": {k: "ok" for k in checks}}
