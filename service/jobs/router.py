from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from service.pagination import PageLimit, PageOffset
from service import idempotency
from service.auth import allow, principal_of
from service.idempotency import IdempotencyKey
from service.ratelimit import spend
from service.keys.service import Scope
from service.db import SessionDep
from service.errors import errors, parse_id
from service.jobs import service
from service.jobs.spec import JobSpec
from service.jobs.schemas import EpochMetricsOut, JobOut, JobPage, MetricsOut
from service.tables import JobStatus
from service.queue import enqueue_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[uuid.UUID, Depends(lambda job_id: parse_id(job_id, "job"))]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, dependencies=[allow(Scope.train)],
             responses=errors(404, 409, 429))
def submit_job(spec: JobSpec, session: SessionDep, request: Request, response: Response,
               idempotency_key: IdempotencyKey = None) -> JobOut | JSONResponse:
    """Queue a training job. Poll the URL in `Location` until `status` is `succeeded`, `failed` or `cancelled`.
    Send an `Idempotency-Key` to retry safely: the retry gets this answer again and no second job."""
    retry = idempotency.attempt(principal_of(request).owner, "/v1/jobs", idempotency_key, spec.model_dump(mode="json"))
    if (earlier := idempotency.earlier_answer(session, retry)) is not None:
        return earlier
    settings, principal = request.app.state.settings, principal_of(request)
    spend(request, "jobs")
    service.check_queued_cap(session, principal.key_id, settings.max_queued_jobs_per_key)
    job = service.create_job(session, spec, settings, principal.key_id)
    answer = service.job_out(session, job)
    # Committed before any worker can receive its id; a retry that committed first answers instead.
    earlier = idempotency.commit_with_answer(session, retry, status.HTTP_202_ACCEPTED, answer.model_dump(mode="json"),
                                             f"/v1/jobs/{job.id}")
    if earlier is not None:
        return earlier
    try:
        enqueue_job(job.id, job.queue)
    except Exception:  # the job stays queued; the reconciler sends it once the broker is back
        service.log.exception("job %s: broker unavailable, it will be sent again later", job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return answer


@router.get("", response_model=JobPage, dependencies=[allow(Scope.train, Scope.read)])
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    limit: PageLimit = 50,
    offset: PageOffset = 0,
) -> JobPage:
    """Jobs, newest first."""
    jobs, total = service.list_jobs(session, status, limit, offset)
    return JobPage(items=[service.job_out(session, j) for j in jobs], total=total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobOut, dependencies=[allow(Scope.train, Scope.read)], responses=errors(404))
def get_job(job_id: JobId, session: SessionDep) -> JobOut:
    return service.job_out(session, service.get_job(session, job_id))


@router.get("/{job_id}/metrics", response_model=MetricsOut, dependencies=[allow(Scope.train, Scope.read)],
            responses=errors(404))
def get_metrics(job_id: JobId, session: SessionDep) -> MetricsOut:
    """One row per finished epoch."""
    rows = service.job_metrics(session, job_id)
    return MetricsOut(job_id=job_id, items=[EpochMetricsOut.model_validate(r) for r in rows])


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut, responses=errors(404, 409),
             dependencies=[allow(Scope.train)])
def cancel_job(job_id: JobId, session: SessionDep) -> JobOut:
    """A queued job never starts; a running one stops at its next batch and keeps the metrics it recorded."""
    return service.job_out(session, service.cancel_job(session, job_id))
