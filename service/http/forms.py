"""A multipart form read with caps on its files and fields, each refusal in the API's own words.

Starlette's parser refuses a form past ``max_files`` or ``max_fields`` with a bare 400; the route says instead
what to send (and, for too many images on /predict, that it is a 413 like too many instances).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from service.http.errors import AppError


@contextlib.asynccontextmanager
async def read_form(request: Request, *, max_files: int, max_fields: int, too_many_files: AppError,
                    too_many_fields: AppError) -> AsyncIterator[FormData]:
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise too_many_files from None
        if "Too many fields" in str(exc.detail):
            raise too_many_fields from None
        raise
    try:
        yield form
    finally:
        await form.close()
