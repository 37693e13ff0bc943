from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from service.http import idempotency
from service.http.auth import allow, principal_of
from service.http.errors import errors, parse_id
from service.http.idempotency import IdempotencyKey
from service.http.pagination import PageLimit, PageOffset
from service.http.ratelimit import spend
from service.jobs import service
from service.jobs.schemas import EpochMetricsOut, JobOut, JobPage, MetricsOut
from service.jobs.spec import JobSpec
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.platform.events import After, LastEventId, event_stream
from service.platform.queue import enqueue_job
from service.platform.runtime import Runtime
from service.platform.tables import JobEvent, JobStatus

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
        enqueue_job(request.app.state.runtime.celery, job.id, job.queue)
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


def _exists(runtime: Runtime, job_id: uuid.UUID) -> None:
    with runtime.session() as session:
        service.get_job(session, job_id)


@router.get("/{job_id}/events", response_class=EventSourceResponse, dependencies=[allow(Scope.train, Scope.read)],
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `status`, `progress` and `epoch`, each with its "
                                            "`id`; the stream ends after the final status."},
                       **errors(404, 422)})
async def job_events(job_id: JobId, request: Request, last_event_id: LastEventId = None, after: After = None):
    """The job's events as they happen, from its first (or after `Last-Event-ID`): every status change,
    progress within an epoch a few times a second at most, and each epoch's metrics. A finished job's
    stream replays its events and ends."""
    await run_in_threadpool(_exists, request.app.state.runtime, job_id)
    return event_stream(request, JobEvent, job_id, last_event_id, after)
