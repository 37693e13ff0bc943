"""`/v1/sweeps`: hyperparameter searches whose trials are ordinary jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from service.http.auth import allow, principal_of
from service.http.errors import errors, parse_id
from service.http.pagination import PageLimit, PageOffset
from service.http.ratelimit import spend
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.platform.events import After, LastEventId, event_stream
from service.platform.runtime import Runtime
from service.platform.tables import SweepEvent
from service.sweeps import service
from service.sweeps.schemas import SweepIn, SweepOut, SweepPage

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])
SweepId = Annotated[uuid.UUID, Depends(lambda sweep_id: parse_id(sweep_id, "sweep"))]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut, dependencies=[allow(Scope.train)],
             responses=errors(404, 422, 429))
async def create_sweep(sweep: SweepIn, request: Request, response: Response) -> SweepOut:
    """Start a search: Optuna samples each trial's settings from `space`, every trial is an ordinary job
    (with `sweep_id` and `trial_number`), at most `budget.parallel` of them queued or running at once, and
    the pruner stops poor trials at an epoch's end (status `pruned`). When the budget is spent the best
    trial's model is registered under `name`. Poll the URL in `Location`."""
    runtime, principal = request.app.state.runtime, principal_of(request)
    spend(request, "jobs")

    def create() -> uuid.UUID:
        with runtime.session() as session:
            return service.create_sweep(session, sweep, runtime.settings, principal.key_id).id

    sweep_id = await run_in_threadpool(create)
    await run_in_threadpool(service.step, runtime, sweep_id)  # the first trials, now
    response.headers["Location"] = f"/v1/sweeps/{sweep_id}"
    return await run_in_threadpool(_out, runtime, sweep_id)


def _out(runtime: Runtime, sweep_id: uuid.UUID) -> SweepOut:
    with runtime.session() as session:
        return service.sweep_out(session, service.get_sweep(session, sweep_id), runtime.settings)


@router.get("", response_model=SweepPage, dependencies=[allow(Scope.train, Scope.read)])
def list_sweeps(session: SessionDep, status: Literal["running", "succeeded", "failed", "cancelled"] | None = None,
                limit: PageLimit = 50, offset: PageOffset = 0) -> SweepPage:
    """Sweeps, newest first, with their trials counted by status."""
    rows, total = service.list_sweeps(session, status, limit, offset)
    return SweepPage(items=[service.summary(session, r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}", response_model=SweepOut, dependencies=[allow(Scope.train, Scope.read)],
            responses=errors(404))
def get_sweep(sweep_id: SweepId, session: SessionDep, request: Request) -> SweepOut:
    """Status, trials counted by status, the best trial so far, every trial's parameters and curve, and the
    parameters' importances once enough trials have finished."""
    return service.sweep_out(session, service.get_sweep(session, sweep_id), request.app.state.settings)


@router.post("/{sweep_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=SweepOut,
             dependencies=[allow(Scope.train)], responses=errors(404, 409))
async def cancel_sweep(sweep_id: SweepId, request: Request) -> SweepOut:
    """Start no more trials: queued ones are cancelled at once, running ones stop at their next batch, and
    the sweep ends `cancelled` when the last has stopped."""
    runtime = request.app.state.runtime

    def cancel() -> None:
        with runtime.session() as session:
            service.cancel_sweep(session, sweep_id)

    await run_in_threadpool(cancel)
    await run_in_threadpool(service.step, runtime, sweep_id)
    return await run_in_threadpool(_out, runtime, sweep_id)


def _exists(runtime: Runtime, sweep_id: uuid.UUID) -> None:
    with runtime.session() as session:
        service.get_sweep(session, sweep_id)


@router.get("/{sweep_id}/events", response_class=EventSourceResponse,
            dependencies=[allow(Scope.train, Scope.read)],
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `trial` and `status`, each with its `id`; the "
                                            "stream ends after the sweep's final status."},
                       **errors(404, 422)})
async def sweep_events(sweep_id: SweepId, request: Request, last_event_id: LastEventId = None,
                       after: After = None):
    """The sweep's progress as it happens, on the same stream as a job's: a `trial` event when a trial is
    launched and when it ends (number, job, status, parameters, value), and `status` when the sweep starts
    and ends (with the best trial and the registered model). Each trial's epochs are on its job's stream."""
    await run_in_threadpool(_exists, request.app.state.runtime, sweep_id)
    return event_stream(request, SweepEvent, sweep_id, last_event_id, after)
