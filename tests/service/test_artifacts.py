"""The artifact store's one interface, on a local folder and on Azure Blob storage (Azurite)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest

from service.platform.artifacts import ArtifactCorrupted, ArtifactMissing, LocalArtifactStore, open_store
from service.platform.settings import Settings


@pytest.fixture(params=["local", "azure"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalArtifactStore(tmp_path / "artifacts")
    conn = request.getfixturevalue("azurite_connection_string")
    return open_store(f"azure://test-{uuid.uuid4().hex[:10]}/some/prefix", conn)


def test_put_get_exists_delete(store):
    sha = store.put("models/a/model.pt", b"weights")
    assert len(sha) == 64
    assert store.exists("models/a/model.pt") and not store.exists("models/b/model.pt")
    assert store.get("models/a/model.pt", sha) == b"weights"
    store.put("models/a/model.pt", b"new weights")  # overwrite in place
    assert store.get("models/a/model.pt") == b"new weights"
    store.delete("models/a/model.pt")
    store.delete("models/a/model.pt")  # deleting twice is not an error
    assert not store.exists("models/a/model.pt")
    with pytest.raises(ArtifactMissing, match="models/a/model.pt"):
        store.get("models/a/model.pt")


def test_a_read_verifies_the_recorded_sha256(store):
    store.put("k/data.bin", b"the real bytes")
    with pytest.raises(ArtifactCorrupted, match="sha256"):
        store.get("k/data.bin", "0" * 64)


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "a/../../b", "a//b", ""])
def test_keys_cannot_leave_the_store(store, key):
    with pytest.raises(ValueError, match="relative path"):
        store.put(key, b"x")


def test_a_reader_never_sees_half_an_artifact(store):
    """A reader racing a writer that keeps replacing a large artifact sees the old bytes or the new ones, never a
    mix; it reads until it has seen both, so the race really happened."""
    old, new = b"a" * 4_000_000, b"b" * 4_000_000
    store.put("big.bin", old)
    stop = threading.Event()

    def write() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            store.put("big.bin", (new, old)[i % 2])

    writer = threading.Thread(target=write)
    writer.start()
    seen: set[bytes] = set()
    reads, deadline = 0, time.monotonic() + 120
    try:
        while (len(seen) < 2 or reads < 20) and time.monotonic() < deadline:
            data = store.get("big.bin")
            assert data in (old, new), f"read {reads}: {len(data)} bytes, {sorted(set(data))[:3]}"
            seen.add(data[:1])
            reads += 1
    finally:
        stop.set()
        writer.join()
    assert seen == {b"a", b"b"} and reads >= 20, (seen, reads)


def test_settings_refuse_an_unknown_store_and_azure_without_a_secret(tmp_path):
    with pytest.raises(ValueError, match="TRAINSERVE_ARTIFACTS_URL must be"):
        Settings(home=tmp_path, artifacts_url="s3://bucket")
    with pytest.raises(ValueError, match="TRAINSERVE_AZURE_STORAGE_CONNECTION_STRING"):
        Settings(home=tmp_path, artifacts_url="azure://artifacts")
    Settings(home=tmp_path, artifacts_url="https://acct.blob.core.windows.net/artifacts")  # workload identity


def test_workload_identity_url_names_account_container_and_prefix():
    blob = open_store("https://acct.blob.core.windows.net/artifacts/prod")._blob("models/x/model.pt")
    assert (blob.account_name, blob.container_name, blob.blob_name) == ("acct", "artifacts", "prod/models/x/model.pt")
    assert blob.url == "https://acct.blob.core.windows.net/artifacts/prod/models/x/model.pt"
