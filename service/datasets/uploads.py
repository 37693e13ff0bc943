"""Receiving a dataset's files: a multipart upload or a download from a URL, both capped in size.

An upload over the limit is refused from its Content-Length before any of it is read, or, without one,
as soon as the bytes received pass the limit; a download likewise, and within a deadline.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
import threading
from pathlib import PurePosixPath
from urllib.parse import urlparse

import certifi
import httpcore
import httpx
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.datasets.service import Upload
from service.http.bodies import Ceiling, raise_ceiling
from service.http.errors import AppError, InvalidInput, PayloadTooLarge

# Multipart framing and the form fields ride on top of the files; they are small.
FORM_OVERHEAD = 64 * 1024


class ImportFailed(AppError):
    status_code, code = 400, "import_failed"


def upload_ceiling(limit: int) -> Ceiling:
    return Ceiling(limit, FORM_OVERHEAD, "TRAINSERVE_MAX_UPLOAD_BYTES", "the upload")


def limited(request: Request, limit: int) -> Request:
    """``request``, whose body may now be up to ``limit`` bytes (plus the form's framing), not the app's
    ceiling for other requests."""
    raise_ceiling(request, upload_ceiling(limit))
    return request


async def read_files(files: list[UploadFile], limit: int) -> Upload:
    if not files:
        raise InvalidInput('send the data as form files named "file" (two for IDX: images and labels)')
    total, read = 0, []
    for f in files:
        total += f.size or 0
        if total > limit:
            raise upload_ceiling(limit).error()
        read.append((PurePosixPath(f.filename or "upload").name, await f.read()))
    return Upload(read)


def _allowed(allowed_hosts: str) -> set[str]:
    return {h.strip().lower() for h in allowed_hosts.split(",") if h.strip()}


# IPv6 forms that carry an IPv4 address a gateway or relay would reach: NAT64 (RFC 6052 and RFC 8215) and
# 6to4 (ipaddress knows 6to4, Teredo and mapped addresses; NAT64 it does not).
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if any(ip in network for network in NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def refusal(address: str) -> str | None:
    """Why an import must not connect to ``address``: loopback, private networks (the cluster, the virtual
    network), link-local (169.254.169.254 answers cloud credentials), every other non-public range, and the
    IPv6 forms (mapped, NAT64, 6to4, Teredo) of any of these."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and (inner := embedded_ipv4(ip)) is not None:
        reason = refusal(str(inner))
        return None if reason is None else f"{address} embeds {reason}"
    for kind, test in (("a loopback address", ip.is_loopback),
                       ("a link-local address (such as a cloud metadata endpoint)", ip.is_link_local),
                       ("a private address", ip.is_private), ("not a public address", not ip.is_global)):
        if test:
            return f"{address} is {kind}"
    return None


class Deadline:
    """A whole download's deadline, connecting, headers and body together. httpx's timeouts apply to each
    read, so a server that trickles a byte at a time would never trip them; when this one passes, every
    socket the download opened is shut down, which ends the read that is waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.passed = seconds, False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def track(self, stream: httpcore.NetworkStream) -> httpcore.NetworkStream:
        sock = stream.get_extra_info("socket")
        with self._lock:
            if self.passed:
                sock.shutdown(socket.SHUT_RDWR)
            self._sockets.append(sock)
        return stream

    def _expire(self) -> None:
        with self._lock:
            self.passed = True
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to public addresses, checked on the address it really connects to, after DNS resolution
    and for every connection a redirect opens, so that a name that resolves to an internal address, or
    changes its answer between a check and the connection, cannot reach inside. The hosts the operator
    opened (TRAINSERVE_IMPORT_ALLOWED_HOSTS) may have any address."""

    def __init__(self, allowed_hosts: str, deadline: Deadline) -> None:
        self.allowed, self.deadline = _allowed(allowed_hosts), deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        if host.lower() in self.allowed:
            return self.deadline.track(super().connect_tcp(host, port, timeout, local_address, socket_options))
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
        except OSError as exc:
            raise ImportFailed(f"could not resolve {host}: {exc}") from None
        for address in addresses:
            if (reason := refusal(address)) is not None:
                raise ImportFailed(f"{host}: {reason}; imports fetch only from public addresses. An operator can "
                                   "open a host with TRAINSERVE_IMPORT_ALLOWED_HOSTS")
        return self.deadline.track(super().connect_tcp(addresses[0], port, timeout, local_address, socket_options))


def guarded_client(deadline: Deadline, allowed_hosts: str) -> httpx.Client:
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx builds its connection pool with the default network backend; this one checks every address.
    transport._pool = httpcore.ConnectionPool(ssl_context=ssl.create_default_context(cafile=certifi.where()),
                                              network_backend=GuardedBackend(allowed_hosts, deadline))
    return httpx.Client(transport=transport, timeout=httpx.Timeout(deadline.seconds), follow_redirects=True,
                        trust_env=False)


def download(url: str, limit: int, timeout: float, allowed_hosts: str = "") -> tuple[str, bytes]:
    """The file at ``url`` (http or https) and its name; refused past ``limit`` bytes, or when the whole
    download, from the first connection to the last byte, takes more than ``timeout`` seconds."""
    name = PurePosixPath(urlparse(url).path).name or "download"
    late = ImportFailed(f"{url} did not finish sending within {timeout:g} s (TRAINSERVE_IMPORT_TIMEOUT_SECONDS)")
    with Deadline(timeout) as deadline:
        try:
            with guarded_client(deadline, allowed_hosts) as client, client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise ImportFailed(f"{url} answered HTTP {response.status_code}; the URL must serve the file "
                                       "itself")
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise PayloadTooLarge(f"{url} is {int(declared):,} bytes, over the {limit:,}-byte limit "
                                          "(TRAINSERVE_MAX_UPLOAD_BYTES)")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"{url} sent more than the {limit:,}-byte limit "
                                              "(TRAINSERVE_MAX_UPLOAD_BYTES)")
                    chunks.append(chunk)
                if deadline.passed:  # the last read may have ended because its socket was shut
                    raise late
        except httpx.HTTPError as exc:
            if deadline.passed or isinstance(exc, httpx.TimeoutException):
                raise late from None
            raise ImportFailed(f"could not download {url}: {exc}") from None
    return name, b"".join(chunks)
