"""`/v1/feedback` and a model's monitoring: its prediction log's settings and each version's live quality."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from service.audit.router import record_request
from service.http.auth import allow
from service.http.errors import errors
from service.http.pagination import MAX_INT
from service.keys.service import Scope
from service.monitoring import service
from service.monitoring.schemas import FeedbackIn, FeedbackOut, MonitoringSettingsIn, MonitoringSettingsOut
from service.platform.db import SessionDep
from service.registry import service as registry

router = APIRouter(tags=["monitoring"])


@router.post("/v1/feedback", response_model=FeedbackOut, dependencies=[allow(Scope.predict, Scope.train)],
             responses=errors(422))
def send_feedback(body: FeedbackIn, session: SessionDep, request: Request) -> FeedbackOut:
    """The true labels (a classifier) or the readings that came (a forecaster) of logged predictions, by the
    request id their answers carried (`X-Request-ID`; gRPC: the answer's `id`). Each item is kept or refused
    on its own, with the reason (an unknown or expired request id, a label outside the model's classes, a
    shape that does not match); the kept ones count towards the version's live quality at once. Sending
    feedback for a request again replaces its labels."""
    results = service.feedback(session, body, request.app.state.settings)
    session.commit()
    accepted = sum(r.accepted for r in results)
    return FeedbackOut(accepted=accepted, refused=len(results) - accepted, items=results)


@router.get("/v1/models/{name}/versions/{version}/monitoring", dependencies=[allow(Scope.predict, Scope.read)],
            responses=errors(404, 422))
def version_monitoring(name: str, version: Annotated[int, Path(ge=1, le=MAX_INT)], session: SessionDep,
                       window: Annotated[str, Query(max_length=8, description="e.g. 1h, 24h, 7d")] = "24h") -> dict:
    """This version's quality on the labelled requests of the window: a classifier's accuracy with its 95 %
    Wilson interval and the number of labels, per-class recall and the confusion matrix (rows: true label);
    a forecaster's MAE and RMSE; each beside the test figures it was registered with."""
    return service.live_quality(session, registry.get_version(session, name, version), service.parse_window(window))


@router.get("/v1/models/{name}/versions/{version}/drift", dependencies=[allow(Scope.predict, Scope.read)],
            responses=errors(404, 422))
def version_drift(name: str, version: Annotated[int, Path(ge=1, le=MAX_INT)], session: SessionDep, request: Request,
                  window: Annotated[str, Query(max_length=8, description="e.g. 1h, 24h, 7d")] = "24h",
                  points: Annotated[int, Query(ge=1, le=500, description="Parts of the window in the series")] = 24,
                  ) -> dict:
    """How far this classifier version's logged live traffic has moved from its test part: each input summary's
    (mean intensity, ink area, the quadrants' means, the confidence) population stability index and binned
    Kolmogorov-Smirnov distance, the predicted classes' PSI and chi-square p-value, the worst PSI against the
    name's threshold (`drifting`: null below TRAINSERVE_DRIFT_MIN_INSTANCES logged instances), and the same
    over `points` parts of the window, for a chart."""
    return service.drift_report(session, registry.get_version(session, name, version), service.parse_window(window),
                                points, request.app.state.settings)


@router.get("/v1/models/{name}/monitoring", response_model=MonitoringSettingsOut,
            dependencies=[allow(Scope.predict, Scope.read)])
def get_monitoring(name: str, session: SessionDep, request: Request) -> MonitoringSettingsOut:
    """The prediction log's share and retention for this model name, as in effect."""
    return service.settings_out(session, name, request.app.state.settings)


@router.put("/v1/models/{name}/monitoring", response_model=MonitoringSettingsOut, dependencies=[allow(Scope.admin)],
            responses=errors(404, 422))
def set_monitoring(name: str, body: MonitoringSettingsIn, session: SessionDep, request: Request) -> MonitoringSettingsOut:
    """Set this model name's prediction log share (0: log nothing of it, its inputs never stored), retention
    and drift threshold; null returns a setting to the deployment's default. Every API process applies it within
    TRAINSERVE_ROLLOUT_SECONDS."""
    registry.resolve(session, name)  # an unknown name is a 404
    before = service.settings_out(session, name, request.app.state.settings).own
    service.set_settings(session, name, body)
    record_request(request, session, "monitoring.set", name, before=before, after=body.model_dump())
    session.commit()
    return service.settings_out(session, name, request.app.state.settings)
