"""Live traffic between two versions of a model while a rollout runs: which version serves a request, the
duplicate passes that compare them, and the counts that each API replica adds to the database every few
seconds. The rollouts feature (service/rollouts) starts, judges and ends rollouts; this module only routes
and counts, from a table of routes read from the database in the background, so the hot path makes no
database round trip and, with no rollout running, costs one empty-dict test.

A request for ``name@alias`` (or the default route, which is ``production``) meets a route when a rollout
runs on that alias; a request that names a version (``name@7``, an id) or the newest (``name``) never does.

- canary: the candidate serves ``weight`` % of the requests; a request with a routing key
  (``X-Routing-Key``, gRPC metadata ``x-routing-key``) always meets the same version at a given weight, and
  keeps meeting the candidate as the weight rises. ``compare_share`` % of the requests are also run on the
  other version after the answer is sent, to measure agreement.
- shadow: the stable version serves every request; ``weight`` % are also run on the candidate after the
  answer is sent, and only the comparison is kept.

The duplicate passes of a classifier are queued and run together on the event loop every 50 ms, one
forward pass per version, as the batcher runs requests (a thread of their own would contend with the loop
for the interpreter on every request: measured, it cost /predict a quarter of its throughput); a
forecaster's run on one thread of their own. The queues hold at most MIRROR_QUEUE and FORECAST_QUEUE; beyond it a
comparison is dropped (counted in ``dropped``), never waited for.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import numpy as np
from sqlalchemy import func, select

from service.observability.timings import Timings
from service.platform.runtime import Runtime
from service.platform.tables import Rollout, RolloutCount
from service.serving.models import LoadedModel, ModelCache, cached_model, logits_of, resolve
from service.serving.predlog import PredictionLog

log = logging.getLogger(__name__)
T = TypeVar("T")

# Latency histogram bounds in seconds, 15 % apart from 0.1 ms to about 30 s: fine enough for a p99 gate, and
# fixed, so that the histograms of every replica add up (RolloutCount.latency).
LATENCY_BOUNDS = tuple(0.0001 * 1.15 ** i for i in range(90))
PROMETHEUS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ACTIVE = ("running", "paused")
ROUTING_KEY = "x-routing-key"  # the header (and gRPC metadata key) that keeps a caller on one version
DEFAULT_ALIAS = "production"  # what the default route follows (service.registry.service.default_model)
MIRROR_QUEUE = 1024  # a classifier's duplicate passes waiting at most (a few rows each); more are dropped
FORECAST_QUEUE = 64  # a forecaster's


def percentile(latency: list[int], q: float) -> float | None:
    """The ``q`` quantile (0-1) of a histogram over LATENCY_BOUNDS, as its bucket's upper bound; None when
    empty. Over the last bound: the last bound."""
    total = sum(latency)
    if total == 0:
        return None
    rank, seen = q * total, 0
    for i, count in enumerate(latency):
        seen += count
        if seen >= rank and count:
            return LATENCY_BOUNDS[min(i, len(LATENCY_BOUNDS) - 1)]
    return LATENCY_BOUNDS[-1]


@dataclass
class Counts:
    """One arm of one step, as one replica saw it since its last flush (or as the judge summed them)."""

    requests: int = 0
    errors: int = 0
    compared: int = 0  # instances run on both versions
    agreed: int = 0  # a classifier's: of those, with the same top-1 label
    difference: float = 0.0  # a forecaster's: the sum of |candidate - stable| over the compared forecasts
    scale: float = 0.0  # ... and of |stable|, so that difference / scale is the relative difference
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))

    def observe(self, seconds: float) -> None:
        self.requests += 1
        self.latency[bisect_left(LATENCY_BOUNDS, seconds)] += 1

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.compared += other.compared
        self.agreed += other.agreed
        self.difference += other.difference
        self.scale += other.scale
        self.latency = [a + b for a, b in zip(self.latency, other.latency)]


@dataclass(frozen=True)
class Route:
    rollout_id: uuid.UUID
    step: int
    mode: str  # canary, shadow
    weight: float  # canary: the candidate's share of requests, in %; shadow: the share mirrored to it
    compare_share: float  # canary: the share of requests also run on the other version, in %
    stable: LoadedModel
    candidate: LoadedModel

    @property
    def salt(self) -> int:
        return self.rollout_id.int & 0xFFFFFFFF


class Ticket:
    """One request's part in a rollout: the version that serves it, the one it is compared with (if any),
    and what is counted when the answer is ready (:meth:`done`) or the request fails (:meth:`failed`)."""

    __slots__ = ("router", "route", "model", "mirror", "started")

    def __init__(self, router: RolloutRouter, route: Route, model: LoadedModel, mirror: LoadedModel | None) -> None:
        self.router, self.route, self.model, self.mirror = router, route, model, mirror
        self.started = time.perf_counter()

    @property
    def arm(self) -> str:
        return "candidate" if self.model is self.route.candidate else "stable"

    def done(self, outputs, *, batch: np.ndarray | None = None,
             rerun: Callable[[LoadedModel], object] | None = None) -> None:
        """The answer is ready: ``outputs`` are a classifier's probabilities for ``batch``, or a forecaster's
        forecasts, which ``rerun(model)`` makes again with another version."""
        self.router.observe(self, time.perf_counter() - self.started, failed=False)
        if self.mirror is not None:
            self.router.compare(self, outputs, batch, rerun)

    def failed(self) -> None:
        self.router.observe(self, time.perf_counter() - self.started, failed=True)


Served = tuple[LoadedModel, "Ticket | None"]


def alias_of(ref: str | None) -> str | None:
    """The alias a request's reference follows (None: it names a version, an id or the newest)."""
    if ref is None:
        return DEFAULT_ALIAS
    _, at, tag = ref.partition("@")
    return tag if at and tag and not tag.isdigit() else None


class RolloutRouter:
    """One per API process: the routes of the running rollouts, the counts since the last flush, and the
    counters by model, version and role that /metrics reads."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache = cache
        self.routes: dict[tuple[uuid.UUID, str], Route] = {}  # by the stable version's id and the alias
        self._counts: dict[tuple[uuid.UUID, int, str], Counts] = {}
        self._lock = threading.Lock()
        self._pending: list[tuple[Ticket, object, np.ndarray]] = []  # classifiers' duplicate passes to run
        self._forecasts = ThreadPoolExecutor(1, thread_name_prefix="rollout-compare")
        self._waiting = 0  # forecasters' duplicate passes queued on that thread
        self.dropped = 0  # comparisons dropped because the duplicate passes fell behind
        # For /metrics, read when scraped: requests and errors by (name, version, role), their latency, and
        # the rollouts by status (gauged each pass, for the rollback alert).
        self.by_role: dict[tuple[str, str, str], list[int]] = {}
        self.timings = Timings(PROMETHEUS_BUCKETS, threads=True)
        self.by_status: dict[str, int] = {}

    def pick(self, model: LoadedModel, ref: str | None, routing_key: str | None) -> Served:
        """The version that serves a request for ``ref`` whose alias points at ``model`` now."""
        if not self.routes:
            return model, None
        route = self.routes.get((model.id, alias_of(ref)))
        if route is None:
            return model, None
        if route.mode == "shadow":
            return model, Ticket(self, route, route.stable,
                                 route.candidate if random.random() * 100 < route.weight else None)
        if routing_key:
            hit = zlib.crc32(routing_key.encode(), route.salt) % 10_000 < route.weight * 100
        else:
            hit = random.random() * 100 < route.weight
        serving, other = (route.candidate, route.stable) if hit else (route.stable, route.candidate)
        mirror = other if route.compare_share and random.random() * 100 < route.compare_share else None
        return serving, Ticket(self, route, serving, mirror)

    def _count(self, route: Route, arm: str) -> Counts:
        key = (route.rollout_id, route.step, arm)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        return counts

    def _role(self, model: LoadedModel, role: str, seconds: float, failed: bool) -> None:
        key = (model.name, str(model.version), role)
        tally = self.by_role.get(key)
        if tally is None:
            tally = self.by_role[key] = [0, 0]
        tally[0] += 1
        tally[1] += failed
        self.timings.observe(key, seconds)

    def observe(self, ticket: Ticket, seconds: float, failed: bool) -> None:
        arm = ticket.arm
        with self._lock:
            counts = self._count(ticket.route, arm)
            counts.observe(seconds)
            counts.errors += failed
            self._role(ticket.model, "canary" if arm == "candidate" else "stable", seconds, failed)

    def compare(self, ticket: Ticket, outputs, batch: np.ndarray | None, rerun: Callable | None) -> None:
        """Queue the duplicate pass: a classifier's joins the others of the moment (:meth:`run_pending`, on
        the event loop); a forecaster's runs on a thread of its own."""
        with self._lock:
            if len(self._pending) >= MIRROR_QUEUE if batch is not None else self._waiting >= FORECAST_QUEUE:
                self.dropped += 1
                return
            if batch is not None:
                self._pending.append((ticket, outputs, batch))
                return
            self._waiting += 1
        self._forecasts.submit(self._compare_forecast, ticket, outputs, rerun)

    def run_pending(self) -> None:
        """The classifiers' duplicate passes queued since the last call: one forward pass per version for all
        of them (as the batcher does for requests), on the event loop's thread, so no other thread contends
        with the loop for the interpreter."""
        with self._lock:
            items, self._pending = self._pending, []
        groups: dict[tuple[uuid.UUID, uuid.UUID], list] = {}
        for item in items:
            groups.setdefault((item[0].route.rollout_id, item[0].mirror.id), []).append(item)
        for group in groups.values():
            for start in range(0, len(group), 64):
                self._compare_classifier(group[start:start + 64])

    def _shadow_pass(self, counts: Counts, mirror: LoadedModel, seconds: float, failed: bool) -> None:
        """In shadow mode the candidate's duplicate pass is its request (under the lock)."""
        counts.observe(seconds)
        counts.errors += failed
        self._role(mirror, "shadow", seconds, failed)

    def _compare_classifier(self, group: list) -> None:
        mirror = group[0][0].mirror
        started = time.perf_counter()
        try:
            theirs = logits_of(mirror, np.concatenate([batch for _, _, batch in group])).argmax(axis=1)
        except Exception:  # noqa: BLE001 - a version that cannot answer agrees with nothing
            log.debug("rollout: the duplicate pass on %s v%d failed", mirror.name, mirror.version, exc_info=True)
            theirs = None
        seconds, offset = time.perf_counter() - started, 0
        with self._lock:
            for ticket, outputs, batch in group:
                n = len(batch)
                counts = self._count(ticket.route, "candidate")
                if ticket.route.mode == "shadow":
                    self._shadow_pass(counts, mirror, seconds, theirs is None)
                counts.compared += n
                if theirs is not None:
                    counts.agreed += int((np.argmax(outputs, axis=1) == theirs[offset:offset + n]).sum())
                offset += n

    def _compare_forecast(self, ticket: Ticket, outputs, rerun: Callable[[LoadedModel], object]) -> None:
        route, mirror = ticket.route, ticket.mirror
        started = time.perf_counter()
        try:
            theirs = np.asarray(rerun(mirror), dtype=np.float64)
        except Exception:  # noqa: BLE001 - a version that cannot answer is counted, not raised
            log.debug("rollout %s: the duplicate pass on %s v%d failed", route.rollout_id, mirror.name,
                      mirror.version, exc_info=True)
            theirs = None
        seconds = time.perf_counter() - started
        ours = np.asarray(outputs, dtype=np.float64)
        stable, candidate = (ours, theirs) if ticket.model is route.stable else (theirs, ours)
        with self._lock:
            self._waiting -= 1
            counts = self._count(route, "candidate")
            if route.mode == "shadow":
                self._shadow_pass(counts, mirror, seconds, theirs is None)
            counts.compared += len(ours)
            if theirs is not None and stable.shape == candidate.shape:
                counts.difference += float(np.abs(candidate - stable).sum())
                counts.scale += float(np.abs(stable).sum())

    def drain(self) -> None:
        """Run the duplicate passes queued now (tests, and the app's shutdown)."""
        self.run_pending()
        self._forecasts.submit(lambda: None).result()

    def flush(self, runtime: Runtime) -> int:
        """Add what this replica counted since the last flush to the database; returns the rows added. A
        replica that dies loses at most this interval's counts."""
        with self._lock:
            counts, self._counts = self._counts, {}
        rows = [RolloutCount(rollout_id=rollout_id, step=step, arm=arm, requests=c.requests, errors=c.errors,
                             compared=c.compared, agreed=c.agreed, difference=c.difference,
                             scale=c.scale, latency=c.latency)
                for (rollout_id, step, arm), c in counts.items()]
        if rows:
            with runtime.session() as session:
                session.add_all(rows)
        return len(rows)

    def refresh(self, runtime: Runtime) -> None:
        """Read the running rollouts' routes, loading both versions of each first, so that routing never
        waits for a model file."""
        with runtime.session() as session:
            rollouts = session.scalars(select(Rollout).where(Rollout.status.in_(ACTIVE))).all()
            wanted = [(r.id, r.name, r.alias, r.mode, r.step, r.request, r.stable, r.candidate) for r in rollouts]
            self.by_status = dict(session.execute(select(Rollout.status, func.count()).group_by(Rollout.status)).all())
        routes = {}
        for rollout_id, _, alias, mode, step, request, stable_row, candidate_row in wanted:
            steps = request["steps"]
            routes[(stable_row.id, alias)] = Route(
                rollout_id, step, mode, steps[min(step, len(steps) - 1)]["weight"], request.get("compare_share", 0.0),
                self.cache.load(stable_row), self.cache.load(candidate_row))
        ended = self.routes.keys() - routes.keys()
        self.routes = routes
        if ended:  # an alias may have moved to the candidate: every reference is resolved again
            self.cache.forget_refs()


class Routing(NamedTuple):
    """Where a request's model comes from and what is kept of it: this process's cache, its rollouts' routes,
    the default route (a setting), the request's routing key, and the prediction log."""

    cache: ModelCache
    router: RolloutRouter | None = None
    default: str | None = None
    key: str | None = None
    log: PredictionLog | None = None


def answered(routing: Routing, model: LoadedModel, ticket: Ticket | None, inputs: np.ndarray, outputs, *,
             batch: np.ndarray | None = None, rerun: Callable | None = None, logged=None) -> None:
    """A request's answer is ready: counted in its rollout (with its comparison queued), and put in the
    prediction log if its model's share picks it. ``logged``: the outputs as the log keeps them, where they
    differ from ``outputs`` (a forecaster's values with their intervals)."""
    if ticket is not None:
        ticket.done(outputs, batch=batch, rerun=rerun)
    if routing.log is not None and routing.log.picks(model):
        role = "canary" if ticket is not None and ticket.arm == "candidate" else "stable"
        routing.log.record(model, role, inputs, outputs if logged is None else logged)


def serve_cached(routing: Routing, ref: str | None, task: str | None) -> Served | None:
    """:func:`service.serving.models.cached_model`, routed: None when the request needs I/O first."""
    model = cached_model(routing.cache, ref, routing.default, task)
    if model is None:
        return None
    router = routing.router
    return (model, None) if router is None else router.pick(model, ref or routing.default, routing.key)


def serve(routing: Routing, ref: str | None, task: str | None) -> Served:
    """:func:`service.serving.models.resolve`, routed."""
    model = resolve(routing.cache, ref, routing.default, task)
    router = routing.router
    return (model, None) if router is None else router.pick(model, ref or routing.default, routing.key)


COMPARE_SECONDS = 0.05  # rows of 50 ms share each forward pass: 5x fewer passes than every 10 ms, at no cost to callers


async def compare_forever(router: RolloutRouter) -> None:
    """Runs the classifiers' duplicate passes on the event loop every COMPARE_SECONDS while a rollout runs."""
    while True:
        await asyncio.sleep(COMPARE_SECONDS if router.routes else 0.5)
        if router._pending:
            try:
                router.run_pending()
            except Exception:
                log.exception("rollouts: the duplicate passes failed")


def checked(ticket: Ticket | None, make: Callable[..., T], *args) -> T:
    """``make(*args)``, counted as the request's failure in its rollout when it raises."""
    try:
        return make(*args)
    except BaseException:
        if ticket is not None:
            ticket.failed()
        raise


def routing_key(router: RolloutRouter, headers) -> str | None:
    """The request's routing key; read only while a rollout runs (a header look-up costs the hot path)."""
    return headers.get(ROUTING_KEY) if router.routes else None
