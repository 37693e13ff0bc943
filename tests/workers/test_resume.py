"""A job whose worker stops mid-training goes back to the queue and, delivered again, resumes from its last
checkpoint with the same result as a run that was never interrupted. Runs the worker's own code in this
process, on the embedded database and artifact store."""

from __future__ import annotations

import threading
import uuid

import pytest

from service.jobs.runner import run_job

SPEC = {
    "dataset": "digits",
    "architecture": {"type": "mlp", "hidden_sizes": [64], "dropout": 0.2},
    "optimizer": {"type": "adam"},
    "training": {"epochs": 5, "batch_size": 64, "seed": 11, "schedule": {"type": "cosine"},
                 "augmentation": {"shift": 0.1, "rotation": 5, "scale": 0.0},
                 "early_stopping": {"monitor": "val_loss", "patience": 10}},
}


class ShutdownAfter(threading.Event):
    """The worker's shutdown flag, raised after the training loop has looked at it ``checks`` times."""

    def __init__(self, checks: int):
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def test_a_stopped_worker_requeues_its_job_and_the_next_delivery_resumes(runtime, client, monkeypatch):
    monkeypatch.setattr(runtime.settings, "stop_check_seconds", 0)  # the loop looks before every batch
    reference = client.post("/v1/jobs", json=SPEC).json()["id"]
    run_job(runtime, uuid.UUID(reference), threading.Event())

    job = client.post("/v1/jobs", json=SPEC).json()["id"]
    run_job(runtime, uuid.UUID(job), ShutdownAfter(checks=50))  # 20 batches an epoch: stops during epoch 3
    stopped = client.get(f"/v1/jobs/{job}").json()
    assert stopped["status"] == "queued" and stopped["progress"]["epoch"] == 2 and stopped["attempts"] == 1
    assert len(client.get(f"/v1/jobs/{job}/metrics").json()["items"]) == 2

    run_job(runtime, uuid.UUID(job), threading.Event())  # delivered again
    done = client.get(f"/v1/jobs/{job}").json()
    assert done["status"] == "succeeded" and done["attempts"] == 2
    resumed = client.get(f"/v1/jobs/{job}/metrics").json()["items"]
    uninterrupted = client.get(f"/v1/jobs/{reference}/metrics").json()["items"]
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4, 5]
    for key in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
        assert [m[key] for m in resumed] == pytest.approx([m[key] for m in uninterrupted], rel=1e-6), key
    reference_result = client.get(f"/v1/jobs/{reference}").json()["result"]
    assert done["result"]["confusion_matrix"] == reference_result["confusion_matrix"]


def test_an_epoch_is_recorded_before_its_checkpoint_is_saved(runtime, client):
    """A worker killed between the two steps must not leave a checkpoint ahead of the recorded epochs: the
    next delivery would resume after an epoch whose row was never written. Rows ahead of the checkpoint are
    forgotten on resume, so recording first loses nothing and does nothing twice."""
    from sqlalchemy import func, select

    from models.export import checkpoint_from_bytes
    from service.platform.runtime import Runtime
    from service.platform.tables import JobMetric

    job_id = uuid.UUID(client.post("/v1/jobs", json={**SPEC, "training": {**SPEC["training"], "epochs": 3}}).json()["id"])
    seen: list[tuple[int, int | None]] = []  # (the checkpoint's epoch, the last epoch recorded when it was saved)

    class Watched:
        """The worker's real artifact store, watched as checkpoints are saved."""

        def __init__(self, store):
            self.store = store

        def __getattr__(self, name):
            return getattr(self.store, name)

        def put(self, key: str, data: bytes) -> str:
            if key.endswith("checkpoint.pt"):
                with runtime.session() as session:
                    recorded = session.scalar(select(func.max(JobMetric.epoch)).where(JobMetric.job_id == job_id))
                seen.append((int(checkpoint_from_bytes(data)["epoch"]), recorded))
            return self.store.put(key, data)

    watched = Runtime(runtime.settings)
    watched.store = Watched(runtime.store)  # the worker's runtime with its store watched
    try:
        run_job(watched, job_id, threading.Event())
    finally:
        watched.close()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert seen == [(1, 1), (2, 2), (3, 3)]
