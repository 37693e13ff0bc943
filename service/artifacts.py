"""The artifact store: datasets, checkpoints and models as named blobs.

Writes are atomic (a temporary file renamed into place), so a reader never sees half an artifact; reads can
verify the sha256 that the database recorded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from service.errors import AppError


class ArtifactCorrupted(AppError):
    status_code, code = 500, "artifact_corrupted"


class ArtifactStore:
    """Artifacts under a local folder; ``key`` is a relative path such as ``models/<id>/model.pt``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` atomically and return its sha256."""
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
        data = self._path(key).read_bytes()
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactCorrupted(f"artifact {key} does not match its recorded sha256")
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def get_store() -> ArtifactStore:
    from service.settings import get_settings

    return ArtifactStore(get_settings().artifacts_folder)
