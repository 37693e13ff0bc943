"""Receiving a dataset's files: a multipart upload or a download from a URL, both capped in size.

An upload over the limit is refused from its Content-Length before any of it is read, or, without one,
as soon as the bytes received pass the limit; a download likewise, and within a deadline.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import PurePosixPath
from urllib.parse import urlparse

import httpx
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.datasets.service import Upload
from service.errors import AppError, InvalidInput, PayloadTooLarge

# Multipart framing and the form fields ride on top of the files; they are small.
FORM_OVERHEAD = 64 * 1024


class ImportFailed(AppError):
    status_code, code = 400, "import_failed"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the upload is larger than the {limit:,}-byte limit (TRAINSERVE_MAX_UPLOAD_BYTES)")


def limited(request: Request, limit: int) -> Request:
    """``request`` with a body that stops at ``limit`` bytes (plus the form's framing)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise _too_large(limit)
    received = 0
    receive: Callable[[], Awaitable[dict]] = request.receive

    async def counted() -> dict:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        if received > limit + FORM_OVERHEAD:
            raise _too_large(limit)
        return message

    return Request(request.scope, counted)


async def read_files(files: list[UploadFile], limit: int) -> Upload:
    if not files:
        raise InvalidInput('send the data as form files named "file" (two for IDX: images and labels)')
    total, read = 0, []
    for f in files:
        total += f.size or 0
        if total > limit:
            raise _too_large(limit)
        read.append((PurePosixPath(f.filename or "upload").name, await f.read()))
    return Upload(read)


def check_host(url: str, allowed_hosts: str) -> None:
    """Refuse hosts outside the operator's allow-list, and link-local addresses (169.254.169.254 answers
    cloud credentials on Azure and elsewhere) whatever the list says, unless it names them."""
    host = (urlparse(url).hostname or "").lower()
    allowed = {h.strip().lower() for h in allowed_hosts.split(",") if h.strip()}
    if allowed and host not in allowed:
        raise ImportFailed(f"{host} is not among the hosts imports may fetch from (TRAINSERVE_IMPORT_ALLOWED_HOSTS: "
                           f"{', '.join(sorted(allowed))})")
    if host in allowed:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise ImportFailed(f"could not resolve {host}: {exc}") from None
    if any(ipaddress.ip_address(a.split("%")[0]).is_link_local for a in addresses):
        raise ImportFailed(f"{host} is a link-local address (such as a cloud metadata endpoint); imports do not "
                           "fetch from there")


def download(url: str, limit: int, timeout: float, allowed_hosts: str = "") -> tuple[str, bytes]:
    """The file at ``url`` (http or https) and its name; refused past ``limit`` bytes or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    name = PurePosixPath(urlparse(url).path).name or "download"
    # Every request, redirects included, is checked before it is sent.
    hooks = {"request": [lambda request: check_host(str(request.url), allowed_hosts)]}
    try:
        with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=True, event_hooks=hooks) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise ImportFailed(f"{url} answered HTTP {response.status_code}; the URL must serve the file itself")
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise PayloadTooLarge(f"{url} is {int(declared):,} bytes, over the {limit:,}-byte limit "
                                      "(TRAINSERVE_MAX_UPLOAD_BYTES)")
            chunks, size = [], 0
            for chunk in response.iter_bytes():  # as it arrives, so the deadline is checked as it arrives
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"{url} sent more than the {limit:,}-byte limit "
                                          "(TRAINSERVE_MAX_UPLOAD_BYTES)")
                if time.monotonic() > deadline:
                    raise ImportFailed(f"{url} did not finish sending within {timeout:g} s "
                                       "(TRAINSERVE_IMPORT_TIMEOUT_SECONDS)")
                chunks.append(chunk)
    except httpx.TimeoutException:
        raise ImportFailed(f"{url} did not answer within {timeout:g} s (TRAINSERVE_IMPORT_TIMEOUT_SECONDS)") from None
    except httpx.HTTPError as exc:
        raise ImportFailed(f"could not download {url}: {exc}") from None
    return name, b"".join(chunks)
