"""The serving side's background pass in every API process, every TRAINSERVE_ROLLOUT_SECONDS: add this
replica's rollout counts to the database, write its prediction log out (and read the per-model shares),
judge the running rollouts (one replica decides each: a row lock), and read the routes again, so that a
step's new weight or a rollout's end reaches the hot path within one interval."""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from service.platform.runtime import Runtime
from service.rollouts import service
from service.serving.predlog import PredictionLog
from service.serving.rollouts import RolloutRouter

log = logging.getLogger(__name__)


def once(router: RolloutRouter, runtime: Runtime, judge: bool = True, predictions: PredictionLog | None = None) -> None:
    router.flush(runtime)
    if predictions is not None:
        predictions.flush(runtime)
        predictions.refresh(runtime)
    if judge:
        service.judge_all(runtime)
    router.refresh(runtime)


async def rollouts_forever(router: RolloutRouter, predictions: PredictionLog, runtime: Runtime,
                           judge: bool = True) -> None:
    seconds = runtime.settings.rollout_seconds
    while True:
        try:
            await run_in_threadpool(once, router, runtime, judge, predictions)
        except Exception:
            log.exception("rollouts: the pass failed; trying again in %.0f s", seconds)
        await asyncio.sleep(seconds)
