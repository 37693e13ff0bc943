"""Makes a registered model's TorchScript and ONNX exports, after its job has succeeded.

Run as a task of its own so a slow exporter never holds a job open, and an export that fails or drifts
from the eager model is recorded as failed while the model itself stays registered and served.
"""

from __future__ import annotations

import logging
import uuid

from models.datasets import builtin_splits
from models.export import model_from_bytes
from models.portable import EXPORT_FORMATS, FILE_SUFFIX, export
from service.artifacts import store_for
from service.db import session_scope
from service.settings import get_settings
from service.tables import TrainedModel

log = logging.getLogger(__name__)
HELD_OUT = 256


def run_export(model_id: uuid.UUID) -> None:
    settings = get_settings()
    store = store_for(settings)
    with session_scope() as session:
        row = session.get(TrainedModel, model_id)
        if row is None:
            return
        todo = [f for f in EXPORT_FORMATS if row.exports.get(f, {}).get("status") != "ok"]
        key, sha256, dataset, training = row.artifact_key, row.sha256, row.dataset.name, row.job.spec["training"]
    if not todo:
        return
    model, _ = model_from_bytes(store.get(key, sha256))
    held_out = builtin_splits(dataset, validation_split=training["validation_split"], test_split=training["test_split"],
                              seed=training["seed"]).test.x[:HELD_OUT]
    results = {}
    for fmt in todo:
        made = export(model, fmt, held_out, settings.export_tolerance)
        entry = {"status": "ok" if made.ok else "failed", "max_abs_difference": made.max_abs_difference,
                 "error": made.error}
        if made.ok:
            export_key = f"models/{model_id}/model.{FILE_SUFFIX[fmt]}"
            entry.update(key=export_key, sha256=store.put(export_key, made.data), size_bytes=len(made.data))
        else:
            log.warning("model %s: %s export failed: %s", model_id, fmt, made.error)
        results[fmt] = entry
    with session_scope() as session:
        row = session.get(TrainedModel, model_id)
        if row is not None:
            row.exports = {**row.exports, **results}
