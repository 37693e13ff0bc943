"""`/v1/models/{name}/retraining`: a model name's retraining policy."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from service.http.auth import allow, principal_of
from service.http.errors import errors
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.retraining import service
from service.retraining.schemas import PolicyIn, PolicyOut

router = APIRouter(tags=["retraining"])


@router.put("/v1/models/{name}/retraining", response_model=PolicyOut, dependencies=[allow(Scope.admin)],
            responses=errors(404, 409, 422))
def set_retraining(name: str, body: PolicyIn, session: SessionDep, request: Request) -> PolicyOut:
    """Train `name` again by itself when its alias's version drifts, its live accuracy falls below a bound, or
    on a schedule: a job with the newest version's spec on the newest version of its dataset, at most one at a
    time and none within the cool-down; the new version, if it passes `gate` and beats the alias's version,
    then rolls out to the alias with `rollout`'s canary rules. Replaces the name's policy; every API replica's
    reconciler carries it out, one replica per step."""
    row = service.set_policy(session, name, body, principal_of(request))
    session.commit()
    return service.policy_out(session, row)


@router.get("/v1/models/{name}/retraining", response_model=PolicyOut,
            dependencies=[allow(Scope.admin, Scope.read)], responses=errors(404))
def get_retraining(name: str, session: SessionDep) -> PolicyOut:
    """The name's policy, the job it runs now, its last rollout and its newest events."""
    return service.policy_out(session, service.get_policy(session, name))


@router.delete("/v1/models/{name}/retraining", status_code=status.HTTP_204_NO_CONTENT,
               dependencies=[allow(Scope.admin)], responses=errors(404))
def delete_retraining(name: str, session: SessionDep, request: Request) -> Response:
    """Remove the policy. A job it started goes on and its version is registered; nothing rolls it out."""
    service.delete_policy(session, name, principal_of(request))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
