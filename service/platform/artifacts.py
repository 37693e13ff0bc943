"""The artifact store: datasets, checkpoints, models and exports as named blobs.

One small interface, two backends, chosen by ``TRAINSERVE_ARTIFACTS_URL``:

- ``file:///srv/artifacts``: a local folder (the embedded default). A write goes to a temporary file that
  is renamed into place, so a reader never sees half an artifact.
- ``azure://<container>[/<prefix>]`` with ``TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING`` (Azurite, or an
  account key), or ``https://<account>.blob.core.windows.net/<container>[/<prefix>]``, which authenticates
  with ``DefaultAzureCredential`` (AKS workload identity, a managed identity, ``az login``). A block blob
  becomes visible only when its upload commits, so readers never see half a blob there either.

Keys are relative paths such as ``models/<id>/model.pt``. Reads verify the sha256 the database recorded.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from service.http.errors import AppError
from service.observability.timings import Timings

# The Azure SDK logs every request's headers at INFO; a worker's log is for its jobs.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

if TYPE_CHECKING:
    pass


class ArtifactCorrupted(AppError):
    status_code, code = 500, "artifact_corrupted"


class ArtifactMissing(AppError):
    status_code, code = 500, "artifact_missing"


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"artifact key {key!r} must be a relative path without '.' or '..' parts")
    return key


def _verified(key: str, data: bytes, sha256: str | None) -> bytes:
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactCorrupted(f"artifact {key} does not match its recorded sha256")
    return data


# Every operation of every store in this process, timed for /metrics (trainserve_artifact_store_seconds).
STORE_TIMINGS = Timings((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
                        threads=True)


def _timed(backend: str, operation: str, method):
    @functools.wraps(method)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            STORE_TIMINGS.observe((backend, operation), time.perf_counter() - started)

    return timed


class ArtifactStore:
    """The interface: every backend stores bytes under a key and nothing else."""

    url: str
    backend = "none"

    def __init_subclass__(cls, **kwargs) -> None:
        """Each backend's operations are timed (STORE_TIMINGS)."""
        super().__init_subclass__(**kwargs)
        for operation in ("put", "get", "exists", "delete", "keys"):
            if operation in cls.__dict__:
                setattr(cls, operation, _timed(cls.backend, operation, cls.__dict__[operation]))

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return its sha256."""
        raise NotImplementedError

    def get(self, key: str, sha256: str | None = None) -> bytes:
        """The bytes under ``key``; with ``sha256``, verified against it."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is not there is not an error."""
        raise NotImplementedError

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder: ends with /), in no particular order."""
        raise NotImplementedError


class LocalArtifactStore(ArtifactStore):
    backend = "file"

    def __init__(self, root: Path):
        self.root = Path(root)
        self.url = f"file://{self.root.resolve()}"

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str, sha256: str | None = None) -> bytes:
        try:
            return _verified(key, self._path(key).read_bytes(), sha256)
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {key} is missing from {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return []
        return [p.relative_to(self.root).as_posix() for p in folder.rglob("*")
                if p.is_file() and not p.name.startswith(".tmp-")]


class AzureBlobArtifactStore(ArtifactStore):
    """Artifacts as block blobs in one container, optionally under a prefix."""

    backend = "azure"

    def __init__(self, container: str, prefix: str = "", *, connection_string: str | None = None,
                 account_url: str | None = None):
        from azure.storage.blob import BlobServiceClient

        if connection_string:
            service = BlobServiceClient.from_connection_string(connection_string)
        else:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(account_url, credential=DefaultAzureCredential())
        self.container = service.get_container_client(container)
        self.prefix = prefix.strip("/")
        self.url = f"{service.url.rstrip('/')}/{container}" + (f"/{self.prefix}" if self.prefix else "")

    def _blob(self, key: str):
        name = f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)
        return self.container.get_blob_client(name)

    def put(self, key: str, data: bytes) -> str:
        from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

        blob = self._blob(key)
        try:
            blob.upload_blob(data, overwrite=True)
        except ResourceNotFoundError:  # the container does not exist yet: make it once, then write
            try:
                self.container.create_container()
            except ResourceExistsError:
                pass
            blob.upload_blob(data, overwrite=True)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str, sha256: str | None = None) -> bytes:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data = self._blob(key).download_blob().readall()
        except ResourceNotFoundError:
            raise ArtifactMissing(f"artifact {key} is missing from {self.url}") from None
        return _verified(key, data, sha256)

    def exists(self, key: str) -> bool:
        return self._blob(key).exists()

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._blob(key).delete_blob()
        except ResourceNotFoundError:
            pass

    def keys(self, prefix: str) -> list[str]:
        from azure.core.exceptions import ResourceNotFoundError

        start = f"{self.prefix}/" if self.prefix else ""
        try:
            return [b.name[len(start):] for b in self.container.list_blobs(name_starts_with=start + _check_key(prefix.rstrip("/")) + "/")]
        except ResourceNotFoundError:  # no container yet: nothing stored
            return []


def open_store(url: str, azure_connection_string: str | None = None) -> ArtifactStore:
    """The store that ``url`` names (see the module's docstring for the forms)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalArtifactStore(Path(parsed.netloc + parsed.path))
    if parsed.scheme == "azure":
        if not azure_connection_string:
            raise ValueError("TRAINSERVE_ARTIFACTS_URL azure://<container> needs "
                             "TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING; or use "
                             "https://<account>.blob.core.windows.net/<container> to sign in with "
                             "DefaultAzureCredential (workload identity)")
        return AzureBlobArtifactStore(parsed.netloc, parsed.path, connection_string=azure_connection_string)
    if parsed.scheme == "https" and parsed.netloc.endswith(".blob.core.windows.net"):
        container, _, prefix = parsed.path.strip("/").partition("/")
        if not container:
            raise ValueError(f"TRAINSERVE_ARTIFACTS_URL {url!r} names no container: "
                             "https://<account>.blob.core.windows.net/<container>[/<prefix>]")
        return AzureBlobArtifactStore(container, prefix, connection_string=azure_connection_string,
                                      account_url=f"https://{parsed.netloc}")
    raise ValueError(f"TRAINSERVE_ARTIFACTS_URL must be file://<folder>, azure://<container> or "
                     f"https://<account>.blob.core.windows.net/<container>, not {url!r}")
