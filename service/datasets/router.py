from __future__ import annotations

import hashlib
from typing import Annotated, AsyncContextManager

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from service.audit.router import record_request
from service.datasets import service
from service.datasets.schemas import DatasetImport, DatasetOut, DatasetPage, UploadForm
from service.datasets.uploads import download, limited, read_files
from service.http import idempotency
from service.http.auth import allow, principal_of
from service.http.errors import InvalidInput, errors, validation_details
from service.http.forms import read_form
from service.http.idempotency import IdempotencyKey
from service.http.pagination import PageLimit, PageOffset
from service.keys.service import Scope
from service.platform.db import SessionDep
from service.serving.routing import form_properties

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

UPLOAD_FORM = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["name", "file"],
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": "one file; two for IDX (images and labels); as many again for a test part "
                                    "(names that say test or t10k, or the test_files field)"},
            **form_properties(UploadForm),
        }}}}},
}


def _answer(row, created: bool, response: Response) -> DatasetOut:
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return service.dataset_out(row)


def _remembered(session, retry: idempotency.Attempt | None, answer: DatasetOut,
                response: Response) -> DatasetOut | JSONResponse:
    """Commit the dataset with the answer kept for a retry; a retry that committed first gets its own answer."""
    earlier = idempotency.commit_with_answer(session, retry, response.status_code, answer.model_dump(mode="json"),
                                             response.headers.get("Location"))
    return answer if earlier is None else earlier


def _upload_form(request: Request, max_bytes: int) -> AsyncContextManager[FormData]:
    """The multipart form, at most four files; a fifth, or too many fields, is refused saying what to send."""
    fields = ", ".join(f for f in UploadForm.model_fields if f not in ("name", "description"))
    return read_form(
        limited(request, max_bytes), max_files=service.MAX_FILES, max_fields=10,
        too_many_files=InvalidInput("too many files; send one file, two for IDX (images and labels), and as many "
                                    "again for a test part", details=[{"field": "file", "message": "at most 4 files"}]),
        too_many_fields=InvalidInput(f"too many form fields; an upload takes name, description and the options "
                                     f"{fields}", details=[{"field": "body", "message": "at most 10 fields"}]))


@router.post("", response_model=DatasetOut, status_code=status.HTTP_201_CREATED, openapi_extra=UPLOAD_FORM,
             dependencies=[allow(Scope.train)],
             responses={200: {"description": "the same content was already uploaded under this name"},
                        **errors(409, 413, 422)})
async def upload_dataset(request: Request, response: Response, session: SessionDep,
                         idempotency_key: IdempotencyKey = None) -> DatasetOut | JSONResponse:
    """Upload a dataset as multipart form data: MNIST IDX (images + labels, gzipped or raw), NPZ (`x`, `y`),
    a CSV of images (a label column and pixel columns), a ZIP of PNG/JPEG images in one folder per class, or
    a CSV of time series (a timestamp column and numeric columns). A dataset may bring its own test set:
    IDX test images and labels beside the training pair, `x_test`/`y_test` in an NPZ, a test CSV, or
    `train/` and `test/` folders in a ZIP; jobs are then tested on it. 201 with a new version; 200 with the
    existing one when this name already holds the same content."""
    settings = request.app.state.settings
    async with _upload_form(request, settings.max_upload_bytes) as form:
        fields = {k: v for k, v in form.items() if isinstance(v, str) and v != ""}
        try:
            spec = UploadForm.model_validate(fields)
        except ValidationError as exc:
            details = validation_details(list(exc.errors()))
            raise InvalidInput("; ".join(f"{d['field']}: {d['message']}" for d in details), details=details)
        upload = await read_files([f for f in form.getlist("file") if isinstance(f, UploadFile)],
                                  settings.max_upload_bytes)
    retry = idempotency.attempt(principal_of(request).owner, "/v1/datasets", idempotency_key, fields,
                                [(name, hashlib.sha256(data).hexdigest()) for name, data in upload.files])
    if (earlier := idempotency.earlier_answer(session, retry)) is not None:
        return earlier
    row, created = await run_in_threadpool(
        service.register_upload, session, request.app.state.runtime.store, name=spec.name, description=spec.description,
        upload=upload, options=spec, max_bytes=settings.max_upload_bytes)
    return _remembered(session, retry, _answer(row, created, response), response)


@router.post("/import", response_model=DatasetOut, status_code=status.HTTP_201_CREATED, dependencies=[allow(Scope.train)],
             responses={200: {"description": "the same content was already imported under this name"},
                        **errors(400, 409, 413)})
async def import_dataset(spec: DatasetImport, request: Request, response: Response,
                         idempotency_key: IdempotencyKey = None) -> DatasetOut | JSONResponse:
    """Download a dataset from an http(s) URL (size-capped, with a deadline) and register it as an upload."""
    runtime = request.app.state.runtime
    settings = runtime.settings
    retry = idempotency.attempt(principal_of(request).owner, "/v1/datasets/import", idempotency_key,
                                spec.model_dump(mode="json"))
    if (earlier := await run_in_threadpool(_earlier_import, runtime, retry)) is not None:
        return earlier
    train_urls = [str(u) for u in (spec.url, spec.labels_url) if u]
    test_urls = [str(u) for u in (spec.test_url, spec.test_labels_url) if u]
    # In threads of their own, a few at a time (TRAINSERVE_IMPORT_CONCURRENCY): slow hosts hold those threads
    # up to their deadline, never the ones every other request runs in.
    fetch = [await anyio.to_thread.run_sync(download, u, settings.max_upload_bytes, settings.import_timeout_seconds,
                                            settings.import_allowed_hosts, limiter=request.app.state.import_slots)
             for u in train_urls + test_urls]
    # Which files are the test part is known here, whatever the URLs call them.
    files = fetch[: len(train_urls)] + [(f"test-{n}", data) for n, data in fetch[len(train_urls) :]]
    spec = spec.model_copy(update={"test_files": ",".join(n for n, _ in files[len(train_urls) :])})
    return await run_in_threadpool(_register_import, runtime, spec, files, ", ".join(train_urls + test_urls), retry,
                                   response)


def _earlier_import(runtime, retry: idempotency.Attempt | None) -> JSONResponse | None:
    with runtime.sessions() as session:
        return idempotency.earlier_answer(session, retry)


def _register_import(runtime, spec: DatasetImport, files: list[tuple[str, bytes]], source_url: str,
                     retry: idempotency.Attempt | None, response: Response) -> DatasetOut | JSONResponse:
    with runtime.sessions() as session:
        row, created = service.register_upload(
            session, runtime.store, name=spec.name, description=spec.description, upload=service.Upload(files),
            options=spec, max_bytes=runtime.settings.max_upload_bytes, source="import", source_url=source_url)
        return _remembered(session, retry, _answer(row, created, response), response)


@router.get("", response_model=DatasetPage, dependencies=[allow(Scope.train, Scope.read)])
def list_datasets(session: SessionDep, limit: PageLimit = 50,
                  offset: PageOffset = 0) -> DatasetPage:
    """Built-in and uploaded datasets, newest first."""
    rows, total = service.list_datasets(session, limit, offset)
    return DatasetPage(items=[service.dataset_out(r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{ref}", response_model=DatasetOut, dependencies=[allow(Scope.train, Scope.read)], responses=errors(404))
def get_dataset(ref: str, session: SessionDep) -> DatasetOut:
    """One dataset by `name` (its newest version), `name@version` or id, with its statistics."""
    row = service.get_dataset(session, ref)
    service.builtin_stats(session, row)
    return service.dataset_out(row)


@router.get("/{ref}/preview", dependencies=[allow(Scope.train, Scope.read)], responses=errors(404, 422))
def preview_dataset(ref: str, session: SessionDep, request: Request,
                    per_class: Annotated[int, Query(ge=1, le=32, description="images of each class")] = 8,
                    last: Annotated[int, Query(ge=1, le=5000, description="readings of a time series, the "
                                               "newest")] = 500) -> dict:
    """A look at the data, as the dashboard shows it: the first images of each class (pixels row by row,
    with `shape` and `value_range`), or a time series' newest readings (`timestamps` and `values` per
    column, null where a reading is missing)."""
    row = service.get_dataset(session, ref)
    if row.source == "builtin" and (missing := service.builtin_missing(row.name)):
        raise InvalidInput(f"dataset {row.name} is not installed on this server: {missing}")
    return service.preview(row, request.app.state.runtime.store, per_class, last)


@router.delete("/{ref}", status_code=status.HTTP_204_NO_CONTENT, dependencies=[allow(Scope.admin)],
               responses=errors(404, 409))
def delete_dataset(ref: str, request: Request, session: SessionDep) -> Response:
    """Delete one version; refused (409) while a model trained on it exists or a job still needs it."""
    row = service.get_dataset(session, ref)
    target = f"{row.name}@{row.version}"
    before = {"id": str(row.id), "name": row.name, "version": row.version, "sha256": row.sha256}
    keys = service.delete_dataset(session, ref)
    record_request(request, session, "dataset.delete", target, before=before, after=None)
    session.commit()
    store = request.app.state.runtime.store
    for key in keys:
        store.delete(key)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
