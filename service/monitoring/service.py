"""Feedback on logged predictions, live quality per version, and the prediction log's settings and retention
(the log itself is written by service/serving/predlog.py)."""

from __future__ import annotations

import logging
import math
import re
import uuid
from datetime import datetime, timedelta
from urllib.parse import unquote

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import drift
from service.http.errors import InvalidInput
from service.monitoring.schemas import FeedbackIn, FeedbackResult, MonitoringSettingsIn, MonitoringSettingsOut
from service.platform.artifacts import ArtifactStore
from service.platform.settings import Settings
from service.platform.tables import DriftCount, MonitoringSettings, Prediction, TrainedModel, utcnow
from service.serving.predlog import PREFIX

log = logging.getLogger(__name__)
WINDOW = re.compile(r"^(\d{1,5})([hd])$")


def parse_window(text: str) -> timedelta:
    match = WINDOW.match(text)
    if not match or int(match.group(1)) == 0:
        raise InvalidInput(f"window {text!r}: write it as hours or days, e.g. 1h, 24h or 7d",
                           details=[{"field": "window", "message": "e.g. 24h or 7d"}])
    n = int(match.group(1))
    return timedelta(hours=n) if match.group(2) == "h" else timedelta(days=n)


def _own(session: Session, name: str, field: str, default):
    """A name's own monitoring setting, or ``default`` where it has none."""
    own = session.get(MonitoringSettings, name)
    value = getattr(own, field) if own is not None else None
    return default if value is None else value


def retention_of(session: Session, name: str, settings: Settings) -> int:
    return _own(session, name, "retention_days", settings.prediction_log_retention_days)


def _refusal(row: Prediction | None, item, model: TrainedModel | None, now: datetime, retention: int | None) -> str | None:
    """Why an item is refused; None when it is kept."""
    if row is None:
        return ("unknown request id: no logged prediction has it (its model's log share may have left the "
                "request out, or its log had not been written yet: they are written every few seconds)")
    if now - row.created_at > timedelta(days=retention):
        return f"the request is older than its model's retention of {retention} days"
    if row.task == "classification":
        labels = item.labels if item.labels is not None else ([item.label] if item.label is not None else None)
        if labels is None or item.actual is not None:
            return "a classifier's feedback is label (one instance) or labels (one per instance)"
        if len(labels) != row.instances:
            return f"{len(labels)} labels for a request of {row.instances} instance(s)"
        classes = model.num_classes
        wrong = [label for label in labels if not 0 <= label < classes]
        if wrong:
            return f"label {wrong[0]} is outside the model's classes 0-{classes - 1}"
        return None
    if item.actual is None or item.label is not None or item.labels is not None:
        return "a forecaster's feedback is actual: the readings that came, one list per instance"
    if len(item.actual) != row.instances or any(len(a) != len(p) for a, p in zip(item.actual, row.predicted)):
        shape = ", ".join(str(len(p)) for p in row.predicted)
        return f"actual must hold {row.instances} list(s) of as many readings as were forecast ({shape})"
    return None


def feedback(session: Session, body: FeedbackIn, settings: Settings) -> list[FeedbackResult]:
    """Keep each item's labels on its logged prediction; refuse an item, with the reason, and keep the rest."""
    ids = [item.request_id for item in body.items]
    rows = {r.request_id: r for r in session.scalars(select(Prediction).where(Prediction.request_id.in_(ids)))}
    models = {m.id: m for m in session.scalars(select(TrainedModel).where(
        TrainedModel.id.in_({r.model_id for r in rows.values()})))} if rows else {}
    retention: dict[str, int] = {}
    now, results = utcnow(), []
    for item in body.items:
        row = rows.get(item.request_id)
        if row is not None and row.name not in retention:
            retention[row.name] = retention_of(session, row.name, settings)
        reason = _refusal(row, item, models.get(row.model_id) if row else None, now,
                          retention.get(row.name) if row else None)
        if reason is None:
            if row.task == "classification":
                row.actual = item.labels if item.labels is not None else [item.label]
            else:
                row.actual = item.actual
            row.labelled_at = now
        results.append(FeedbackResult(request_id=item.request_id, accepted=reason is None, reason=reason))
    session.flush()
    return results


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95 %): honest at small n and near 0 or 1."""
    if n == 0:
        return None
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)


def live_quality(session: Session, model: TrainedModel, window: timedelta) -> dict:
    """The version's quality on labelled live traffic in the window (by when the requests were made)."""
    since = utcnow() - window
    rows = session.execute(select(Prediction.predicted, Prediction.actual).where(
        Prediction.model_id == model.id, Prediction.created_at >= since)).all()
    labelled = [(p, a) for p, a in rows if a is not None]
    out = {"model": {"id": str(model.id), "name": model.name, "version": model.version}, "task": model.task,
           "since": since.isoformat(), "logged_requests": len(rows), "labelled_requests": len(labelled)}
    if model.task == "classification":
        predicted = np.array([v for p, _ in labelled for v in p], dtype=np.int64)
        actual = np.array([v for _, a in labelled for v in a], dtype=np.int64)
        k = model.num_classes
        matrix = np.zeros((k, k), dtype=np.int64)
        np.add.at(matrix, (actual, predicted), 1)
        correct, n = int(np.trace(matrix)), int(matrix.sum())
        recall = {str(c): (round(float(matrix[c, c] / matrix[c].sum()), 6) if matrix[c].sum() else None)
                  for c in range(k)}
        out.update(labels=n, accuracy=correct / n if n else None, accuracy_ci95=wilson(correct, n),
                   per_class_recall=recall, confusion_matrix=matrix.tolist(),
                   test_accuracy=model.metrics.get("test_accuracy"))
    else:
        errors = np.array([f - r for p, a in labelled for fp, ar in zip(p, a) for f, r in zip(fp, ar)], dtype=float)
        test = model.metrics.get("model") or {}
        out.update(labels=len(errors), mae=float(np.abs(errors).mean()) if len(errors) else None,
                   rmse=float(np.sqrt((errors ** 2).mean())) if len(errors) else None,
                   test_mae=test.get("mae"), test_rmse=test.get("rmse"))
    return out


def live_counts(session: Session, since: datetime) -> dict[tuple[str, str], tuple[int, int]]:
    """Each classifier version's labelled live instances since ``since``, and how many it answered right:
    by (name, version), for the Prometheus gauges."""
    counts: dict[tuple[str, str], list[int]] = {}
    for name, version, predicted, actual in session.execute(
            select(Prediction.name, Prediction.version, Prediction.predicted, Prediction.actual).where(
                Prediction.task == "classification", Prediction.labelled_at.is_not(None),
                Prediction.created_at >= since)):
        tally = counts.setdefault((name, str(version)), [0, 0])
        tally[0] += len(actual)
        tally[1] += sum(p == a for p, a in zip(predicted, actual))
    return {key: (n, correct) for key, (n, correct) in counts.items()}


def settings_out(session: Session, name: str, settings: Settings) -> MonitoringSettingsOut:
    own = session.get(MonitoringSettings, name)
    return MonitoringSettingsOut(
        name=name, log_share=_own(session, name, "log_share", settings.prediction_log_share),
        retention_days=retention_of(session, name, settings),
        drift_threshold=_own(session, name, "drift_threshold", settings.drift_threshold),
        own={field: getattr(own, field) if own else None for field in MonitoringSettingsIn.model_fields})


def set_settings(session: Session, name: str, body: MonitoringSettingsIn) -> MonitoringSettings:
    row = session.get(MonitoringSettings, name)
    if row is None:
        row = MonitoringSettings(name=name)
        session.add(row)
    for field, value in body.model_dump().items():
        setattr(row, field, value)
    row.updated_at = utcnow()
    session.flush()
    return row


def _drift_of(profile: dict, total: dict | None, threshold: float, min_instances: int) -> dict:
    """A window's counts against the reference: each summary's scores, the worst PSI, and the verdict
    (None below ``min_instances``)."""
    if total is None:
        return {"instances": 0, "max_psi": None, "worst": None, "drifting": None, "scores": {}}
    scores = drift.scores(profile, total)
    worst = max(scores, key=lambda k: scores[k]["psi"]) if scores else None
    top = scores[worst]["psi"] if worst else None
    return {"instances": total["instances"], "max_psi": top, "worst": worst,
            "drifting": None if total["instances"] < min_instances or top is None else top > threshold,
            "scores": scores}


def drift_report(session: Session, model: TrainedModel, window: timedelta, points: int, settings: Settings) -> dict:
    """How far the version's logged live traffic of the window has moved from its reference profile: over
    the whole window, and over ``points`` equal parts of it (a chart over time)."""
    now = utcnow()
    since = now - window
    threshold = _own(session, model.name, "drift_threshold", settings.drift_threshold)
    out = {"model": {"id": str(model.id), "name": model.name, "version": model.version},
           "since": since.isoformat(), "threshold": threshold, "min_instances": settings.drift_min_instances}
    if model.profile is None:
        return {**out, "profile": None, "reason": "this version has no reference profile: drift is measured for "
                                                  "classifiers registered by this release or later"}
    rows = session.execute(select(DriftCount.created_at, DriftCount.counts).where(
        DriftCount.model_id == model.id, DriftCount.created_at >= since).order_by(DriftCount.created_at)).all()
    step = window / points
    parts: list[dict | None] = [None] * points
    total = None
    for at, counts in rows:
        total = drift.add(total, counts)
        i = min(int((at - since) / step), points - 1)
        parts[i] = drift.add(parts[i], counts)
    series = [{"start": (since + i * step).isoformat(), "end": (since + (i + 1) * step).isoformat(),
               **{k: v for k, v in _drift_of(model.profile, part, threshold, settings.drift_min_instances).items()
                  if k != "scores"}} for i, part in enumerate(parts)]
    return {**out, "profile": {"instances": model.profile["instances"], "summaries": list(model.profile["features"])},
            **_drift_of(model.profile, total, threshold, settings.drift_min_instances), "series": series}


def drift_now(session: Session, since: datetime, settings: Settings,
              model_id: uuid.UUID | None = None) -> dict[tuple[str, str], dict]:
    """Every classifier version's drift (or only ``model_id``'s) over its logged traffic since ``since``, by
    (name, version): for the Prometheus gauges and the retraining trigger."""
    totals: dict[uuid.UUID, dict] = {}
    query = select(DriftCount.model_id, DriftCount.counts).where(DriftCount.created_at >= since)
    if model_id is not None:
        query = query.where(DriftCount.model_id == model_id)
    for model_id, counts in session.execute(query):
        totals[model_id] = drift.add(totals.get(model_id), counts)
    out = {}
    for model in session.scalars(select(TrainedModel).where(TrainedModel.id.in_(totals))) if totals else []:
        if model.profile is not None:
            threshold = _own(session, model.name, "drift_threshold", settings.drift_threshold)
            out[(model.name, str(model.version))] = {
                "threshold": threshold,
                **_drift_of(model.profile, totals[model.id], threshold, settings.drift_min_instances)}
    return out


PARTITION = re.compile(rf"^{PREFIX}/model=([^/]+)/date=(\d{{4}}-\d{{2}}-\d{{2}})/hour=(\d{{2}})/")


def prune(session: Session, store: ArtifactStore | None, settings: Settings, now: datetime | None = None) -> int:
    """Delete what is older than its model's retention: the logged requests (with their feedback), their drift
    counts and, with
    ``store``, the Parquet files of the hours past it. Returns the files deleted."""
    now = now or utcnow()
    own = {r.name: r.retention_days for r in session.scalars(select(MonitoringSettings))
           if r.retention_days is not None}
    default = settings.prediction_log_retention_days
    for days in {default, *own.values()}:
        names = [n for n, d in own.items() if d == days]
        for table in (Prediction, DriftCount):
            query = delete(table).where(table.created_at < now - timedelta(days=days))
            query = query.where(table.name.in_(names)) if days != default else \
                query.where(table.name.not_in([n for n, d in own.items() if d != default]))
            session.execute(query)
    if store is None:
        return 0
    deleted = 0
    for key in store.keys(PREFIX):
        match = PARTITION.match(key)
        if match is None:
            continue
        hour_end = datetime.fromisoformat(f"{match.group(2)}T{match.group(3)}:00:00+00:00") + timedelta(hours=1)
        if now - hour_end > timedelta(days=own.get(unquote(match.group(1)), default)):
            store.delete(key)
            deleted += 1
    return deleted
