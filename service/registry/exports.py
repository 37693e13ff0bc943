"""Makes a registered model's TorchScript and ONNX exports, after its job has succeeded.

Run as a task of its own, on a queue of its own, so a slow exporter never holds a job open or delays the
next one. Each export is checked against the eager model on the job's own held-out inputs, saved beside the
model when it was registered: up to 256 inputs from the test part of the dataset it trained on (an upload's
held-out images, or a forecaster's test windows). An export that fails or drifts is recorded on the model
with its reason, while the model itself stays registered and served.
"""

from __future__ import annotations

import logging
import uuid

from models.export import model_from_bytes, tensor_from_bytes
from models.portable import EXPORT_FORMATS, FILE_SUFFIX, export
from service.observability.tracing import span
from service.platform.runtime import Runtime
from service.platform.tables import TrainedModel
from service.registry.service import held_out_key

log = logging.getLogger(__name__)


def run_export(runtime: Runtime, model_id: uuid.UUID) -> None:
    store = runtime.store
    with runtime.session() as session:
        row = session.get(TrainedModel, model_id)
        if row is None:
            return
        todo = [f for f in EXPORT_FORMATS if row.exports.get(f, {}).get("status") != "ok"]
        key, sha256, task = row.artifact_key, row.sha256, row.task
    if not todo:
        return
    try:
        model, _ = model_from_bytes(store.get(key, sha256))
        held_out = tensor_from_bytes(store.get(held_out_key(model_id)))
    except Exception as exc:  # recorded, so the download says why instead of waiting for nothing
        log.exception("model %s: could not prepare its exports", model_id)
        error = f"could not load the model or the held-out inputs saved with it ({type(exc).__name__}: {exc})"
        results = {fmt: {"status": "failed", "max_abs_difference": None, "error": error[:500]} for fmt in todo}
    else:
        results = {}
        for fmt in todo:
            with span("export", **{"trainserve.model_id": str(model_id), "trainserve.format": fmt}):
                results[fmt] = _export_one(model_id, model, fmt, held_out, task, runtime.settings.export_tolerance,
                                             store)
    with runtime.session() as session:
        row = session.get(TrainedModel, model_id)
        if row is not None:
            row.exports = {**row.exports, **results}


def _export_one(model_id, model, fmt, held_out, task, tolerance, store) -> dict:
    made = export(model, fmt, held_out, tolerance, task=task)
    entry = {"status": "ok" if made.ok else "failed", "max_abs_difference": made.max_abs_difference,
             "error": made.error}
    if made.ok:
        export_key = f"models/{model_id}/model.{FILE_SUFFIX[fmt]}"
        entry.update(key=export_key, sha256=store.put(export_key, made.data), size_bytes=len(made.data))
    else:
        log.warning("model %s: %s export failed: %s", model_id, fmt, made.error)
    return entry
