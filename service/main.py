"""Assembles the FastAPI app; everything else lives in the resource packages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from service.audit.router import router as audit_router
from service.datasets.router import router as datasets_router
from service.forecast.router import router as forecast_router
from service.http import docs_ui, health, openapi
from service.http.auth import KeyCache
from service.http.bodies import BodyCeiling
from service.http.errors import install_error_handlers
from service.http.ratelimit import Limit, RateLimiter
from service.inference_v2.router import router as v2_router
from service.jobs.router import router as jobs_router
from service.keys.router import router as keys_router
from service.monitoring.router import router as monitoring_router
from service.observability import logs, metrics, tracing
from service.observability.telemetry import TelemetryMiddleware, TracedFastAPI
from service.platform.events import EventHub
from service.platform.runtime import Runtime
from service.platform.settings import Settings, load_settings
from service.predict.router import router as predict_router
from service.reconciler import Reconciler, reconcile_forever
from service.registry.router import router as models_router
from service.retraining.router import router as retraining_router
from service.rollouts.background import rollouts_forever
from service.rollouts.router import router as rollouts_router
from service.serving.batching import Batcher
from service.serving.models import ModelCache
from service.serving.predlog import PredictionLog
from service.serving.process import api_process_settings
from service.serving.rollouts import RolloutRouter, compare_forever
from service.sweeps.router import router as sweeps_router

log = logging.getLogger("trainserve.api")


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None, reconcile: bool = True,
               tune_process: bool = True) -> FastAPI:
    """The app, on ``runtime`` (or one built from ``settings``, or else from the environment: this is the
    API process's entry point). ``tune_process``: while it runs, set the process's thread counts and garbage
    collector for serving (service/serving/process.py); off where the app is a guest in another program's
    process (the tests)."""
    runtime = runtime or Runtime(settings or load_settings())
    settings = runtime.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.keys_required:
            log.info("API keys required (TRAINSERVE_AUTH=%s, listening on %s)", settings.auth, settings.api_host)
        else:
            log.warning("API keys are NOT required: the API listens on %s (loopback) only and TRAINSERVE_AUTH=%s; "
                        "set TRAINSERVE_AUTH=required to require them", settings.api_host, settings.auth)
        app.state.import_slots = anyio.CapacityLimiter(settings.import_concurrency)
        if settings.api_metrics_port and app.state.metrics is not None:
            app.state.metrics.serve(settings.api_metrics_port)
        grpc_server = None
        if settings.grpc_port is not None:  # imported only here: a process without gRPC loads none of it
            from service.inference_v2 import grpc as inference_grpc

            grpc_server = await inference_grpc.start(app.state, settings.grpc_port, settings.api_host)
        with api_process_settings(settings.api_torch_threads) if tune_process else contextlib.nullcontext():
            tasks = [asyncio.create_task(rollouts_forever(app.state.rollouts, app.state.prediction_log, runtime,
                                                          judge=reconcile)),
                     asyncio.create_task(compare_forever(app.state.rollouts))]
            if reconcile:
                tasks.append(asyncio.create_task(reconcile_forever(app.state.reconciler)))
            yield
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # the last seconds' counts and logs, if the database answers
                await run_in_threadpool(app.state.rollouts.flush, runtime)
                await run_in_threadpool(app.state.prediction_log.flush, runtime)
            if grpc_server is not None:
                await grpc_server.stop(grace=2)
        runtime.close()

    provider = tracing.configure("trainserve-api")
    app = TracedFastAPI(
        telemetry=tracing.fastapi_telemetry(provider),
        docs_url=None, redoc_url=None,  # served from the package instead of a CDN (service/http/docs_ui.py)
        title="trainserve",
        version="0.1.0",
        summary="Train small PyTorch models over REST and serve their predictions.",
        lifespan=lifespan,
    )
    app.trace_share = settings.trace_inference_share if provider is not None else None
    app.state.runtime, app.state.settings = runtime, settings
    app.state.models = ModelCache(runtime, settings.model_cache_size, settings.ref_cache_seconds)
    app.state.rollouts = RolloutRouter(app.state.models)
    app.state.prediction_log = PredictionLog(settings.prediction_log_share, settings.prediction_log_buffer)
    app.state.batcher = Batcher()
    app.state.events = EventHub(runtime.session)
    app.state.keys = KeyCache(runtime.session, settings.auth_cache_seconds)
    app.state.reconciler = Reconciler(runtime)
    app.state.metrics = metrics.Metrics(app.state) if settings.metrics else None
    # The request id (X-Request-ID) is what feedback names a logged prediction by.
    if app.state.metrics is not None or settings.log_format == "json" or settings.prediction_log_share > 0:
        app.add_middleware(TelemetryMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodyCeiling, limit=settings.max_request_bytes)
    app.state.limiter = RateLimiter(settings.broker_url, settings.queue)
    app.state.limits = {"inference": Limit.parse(settings.rate_limit_inference),
                        "jobs": Limit.parse(settings.rate_limit_jobs)}
    install_error_handlers(app)
    openapi.install(app)
    # Starlette tries routes in order: the inference endpoints, the hot path, go first.
    for router in (predict_router, forecast_router, v2_router, health.router, jobs_router, sweeps_router,
                   rollouts_router, monitoring_router, retraining_router, models_router, datasets_router, keys_router,
                   audit_router, metrics.router):
        app.include_router(router)
    docs_ui.install(app)  # after the API's routes: /predict is matched first
    logs.configure(settings.log_format, access_log=settings.access_log)
    return app
