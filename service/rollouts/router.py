"""`/v1/models/{name}/rollouts`: canary and shadow rollouts of a model version, judged on live traffic."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse

from service.http.auth import allow, principal_of
from service.http.errors import errors, parse_id
from service.http.pagination import PageLimit, PageOffset
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.platform.events import After, LastEventId, event_stream
from service.platform.runtime import Runtime
from service.platform.tables import RolloutEvent
from service.rollouts import service
from service.rollouts.schemas import RolloutIn, RolloutOut, RolloutPage

router = APIRouter(tags=["rollouts"])
RolloutId = Annotated[uuid.UUID, Depends(lambda rollout_id: parse_id(rollout_id, "rollout"))]
Status = Literal["running", "paused", "succeeded", "rolled_back"]
READ = [allow(Scope.admin, Scope.read)]


@router.post("/v1/models/{name}/rollouts", status_code=status.HTTP_201_CREATED, response_model=RolloutOut,
             dependencies=[allow(Scope.admin)], responses=errors(404, 409, 422))
def start_rollout(name: str, body: RolloutIn, session: SessionDep, request: Request, response: Response) -> RolloutOut:
    """Start moving `name@alias` to the candidate version. **canary**: the candidate serves each step's
    `weight` % of the requests for `name@alias` (a request with `X-Routing-Key` always meets the same
    version); **shadow**: the stable version answers every request and `weight` % also run on the candidate
    after the answer. At each step the gates judge the step's live counts from every API replica: a failing
    gate rolls back at once (the alias never moved), and all passing for the step's time and requests move on;
    the last step passed moves the alias. Requests that name a version (`name@7`, an id) are never routed."""
    row = service.start(session, name, body, principal_of(request))
    session.commit()
    response.headers["Location"] = f"/v1/models/{name}/rollouts/{row.id}"
    return service.rollout_out(session, row)


@router.get("/v1/rollouts", response_model=RolloutPage, dependencies=READ)
def list_all_rollouts(session: SessionDep, status: Status | None = None, limit: PageLimit = 50,
                      offset: PageOffset = 0) -> RolloutPage:
    """Every model's rollouts, newest first; `status=running` lists those moving traffic now."""
    return _page(session, None, status, limit, offset)


@router.get("/v1/models/{name}/rollouts", response_model=RolloutPage, dependencies=READ)
def list_rollouts(name: str, session: SessionDep, status: Status | None = None, limit: PageLimit = 50,
                  offset: PageOffset = 0) -> RolloutPage:
    """This model's rollouts, newest first."""
    return _page(session, name, status, limit, offset)


def _page(session, name: str | None, status: str | None, limit: int, offset: int) -> RolloutPage:
    rows, total = service.list_rollouts(session, name, status, limit, offset)
    return RolloutPage(items=[service.rollout_out(session, r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/v1/models/{name}/rollouts/{rollout_id}", response_model=RolloutOut, dependencies=READ,
            responses=errors(404))
def get_rollout(name: str, rollout_id: RolloutId, session: SessionDep) -> RolloutOut:
    """The rollout with this step's live numbers per version (summed over the replicas' counts of the last
    few seconds) and each gate against its bound."""
    return service.rollout_out(session, service.get_rollout(session, name, rollout_id))


def _command(action: str):
    def run(name: str, rollout_id: RolloutId, session: SessionDep, request: Request) -> RolloutOut:
        row = service.command(session, name, rollout_id, action, principal_of(request))
        session.commit()
        request.app.state.models.forget_refs()
        return service.rollout_out(session, row)
    return run


for action, summary in (("pause", "Hold the rollout at its step: the split stays, the gates stop judging."),
                        ("resume", "Judge the paused rollout again, from its step."),
                        ("promote", "Finish now: the alias moves to the candidate."),
                        ("abort", "Roll back now: the alias stays on the stable version, which serves every request.")):
    router.add_api_route(f"/v1/models/{{name}}/rollouts/{{rollout_id}}/{action}", _command(action), methods=["POST"],
                         response_model=RolloutOut, dependencies=[allow(Scope.admin)], responses=errors(404, 409),
                         summary=summary, name=f"{action}_rollout")


def _exists(runtime: Runtime, name: str, rollout_id: uuid.UUID) -> None:
    with runtime.session() as session:
        service.get_rollout(session, name, rollout_id)


@router.get("/v1/models/{name}/rollouts/{rollout_id}/events", response_class=EventSourceResponse,
            dependencies=READ,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `status`, `step` and `verdict`, each with its `id`; "
                                            "the stream ends after the rollout's final status."},
                       **errors(404, 422)})
async def rollout_events(name: str, rollout_id: RolloutId, request: Request, last_event_id: LastEventId = None,
                         after: After = None):
    """The rollout as it happens, on the same stream as a job's: `step` when a step begins (its weight),
    `verdict` when the gates decide (pass or fail, with every gate's numbers), and `status` when it starts,
    is paused or resumed, and ends (succeeded or rolled_back, with the reason)."""
    await run_in_threadpool(_exists, request.app.state.runtime, name, rollout_id)
    return event_stream(request, RolloutEvent, rollout_id, last_event_id, after)
